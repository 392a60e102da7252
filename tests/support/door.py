"""A RESP session over one test backend, with small limits, for the per-kind command suites.

Requests run as dispatch runs them (handler, operation, reply), on a store opened by
:mod:`tests.support.backends`, so a suite checks a command's rules on every backend
without a daemon. The limits are small so that caps are reached with small values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd import ops
from stashd.commands.base import Session
from stashd.service import MemoryService
from stashd.tenancy import OpenKeyring
from stashd.types import Limits, Principal, Quota

if TYPE_CHECKING:
    from tests.support.backends import Backend

#: The store clock's start, the namespace, and the session's limits.
T0: Final = 1_700_000_000_000
NS: Final = "alice"
DEFAULT_TTL_MS: Final = 600_000
MAX_TTL_MS: Final = 3_600_000
MAX_PAYLOAD: Final = 200


class Door:
    """One backend and a RESP session (RESP2 unless told) with a small payload cap and quota."""

    def __init__(self, backend: Backend, quota: Quota | None = None, proto: int = 2) -> None:
        self.backend = backend
        limits = Limits(MAX_PAYLOAD, DEFAULT_TTL_MS, MAX_TTL_MS, quota=quota or Quota())
        self.session = Session(MemoryService(backend.store), OpenKeyring(limits), None)
        self.session.principal = Principal(NS, limits, NS)
        self.session.proto = proto

    def call(self, *words: bytes) -> Any:  # noqa: ANN401 - each command has its own reply
        """Run one request as dispatch does; a refusal is returned, not raised."""
        return self.backend.call(self.session, *words)

    def entries(self) -> dict[bytes, tuple[bytes, int, int, int]]:
        """Every live entry: value, version, expiry, kind (what a refusal must not change)."""
        _, items = self.backend.run(ops.Page(NS, 0, 1000))
        return {k: (e.value, e.version, e.expires_at, e.kind) for k, e in items}

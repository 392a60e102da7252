"""Who a connection is: the namespace and limits that an API key resolves to.

This is the one place that maps credentials to a namespace. In the zero-config "open"
mode any non-empty key is accepted and names its own namespace (a digest of the key, so
the key itself is never stored or logged); connections that never authenticate share
the default namespace. Registered keys and tiers plug in behind the same interface.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Protocol

DEFAULT_NAMESPACE: Final = "default"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one caller may do: payload size and TTL bounds, in the units the wire uses."""

    max_payload: int  # bytes per value
    default_ttl_ms: int  # applied to writes that name no TTL
    max_ttl_ms: int  # no key may live longer than this from now


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated (or anonymous) caller: its namespace, limits and display name."""

    namespace: str
    limits: Limits
    user: str = "default"


class Keyring(Protocol):
    """Resolves credentials to a principal; ``None`` means the credentials are refused."""

    def anonymous(self) -> Principal | None:
        """The principal of a connection that has not authenticated (None: must AUTH)."""
        ...

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        """The principal for ``key``, or None for an unknown, revoked or malformed key."""
        ...


def namespace_of(key: bytes) -> str:
    """A key's namespace: a digest, so namespaces never reveal or store the key."""
    return hashlib.sha256(b"stash-namespace:" + key).hexdigest()[:32]


class OpenKeyring:
    """Open mode: every non-empty key is its own namespace, all with the same limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._anonymous = Principal(DEFAULT_NAMESPACE, limits)

    def anonymous(self) -> Principal | None:
        """Unauthenticated connections share the default namespace."""
        return self._anonymous

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        """Accept any non-empty key; the username does not change the namespace."""
        if not key:
            return None
        return Principal(namespace_of(key), self.limits, username or "default")

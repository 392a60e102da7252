"""The Python API's leases: ``with stash.lease(key, ttl=30) as lease`` claims, renews, releases.

A :class:`Lease` is what :meth:`stashd.Stash.lease` returns, :class:`AsyncLease` what
:meth:`stashd.AsyncStash.lease` does: entering claims the key (LeaseHeld when another
owner holds it), ``renew()`` gives it a new TTL (LeaseLost when it was lost), and
leaving releases it. The rules are the memory service's (:mod:`stashd.ops.leases`);
these only carry the owner and token between calls.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Protocol, Self

from stashd.errors import LeaseLost

if TYPE_CHECKING:
    from types import TracebackType


class LeaseCalls(Protocol):
    """What a synchronous transport offers for leases."""

    def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int:
        """Claim the key: the token, or LeaseHeld."""
        ...

    def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool:
        """Renew the owner's lease: whether it was held."""
        ...

    def lease_release(self, key: bytes, owner: bytes, token: int) -> bool:
        """Release the owner's lease: whether it was held."""
        ...


class AsyncLeaseCalls(Protocol):
    """What an asynchronous transport offers for leases."""

    async def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int:
        """Claim the key: the token, or LeaseHeld."""
        ...

    async def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool:
        """Renew the owner's lease: whether it was held."""
        ...

    async def lease_release(self, key: bytes, owner: bytes, token: int) -> bool:
        """Release the owner's lease: whether it was held."""
        ...


def new_owner() -> str:
    """An owner name no other lease holder uses: each lease object is its own owner."""
    return uuid.uuid4().hex


class _Base:
    """What both kinds hold: the key, owner, TTL, and the token once claimed."""

    def __init__(self, key: bytes, owner: str | None, ttl: int) -> None:
        self.key = key
        self.owner = new_owner() if owner is None else owner
        self.ttl = ttl
        self._token: int | None = None

    @property
    def token(self) -> int:
        """The fencing token of the claim; pass it to whatever the work writes to."""
        if self._token is None:
            msg = "the lease is not claimed: use it in a with block, or call claim()"
            raise RuntimeError(msg)
        return self._token

    def __repr__(self) -> str:
        key = self.key.decode("utf-8", "replace")
        return f"<Lease {key!r} owner={self.owner!r} token={self._token}>"


class Lease(_Base):
    """A lease on one key for one owner; see :meth:`stashd.Stash.lease`."""

    def __init__(self, calls: LeaseCalls, key: bytes, owner: str | None, ttl: int) -> None:
        super().__init__(key, owner, ttl)
        self._calls = calls

    def claim(self) -> int:
        """Take the lease; its fencing token. Raises LeaseHeld while another owner holds it."""
        self._token = self._calls.lease_claim(self.key, self.owner.encode(), self.ttl)
        return self._token

    def renew(self, ttl: int | None = None) -> None:
        """A new TTL from now (the lease's own unless given); LeaseLost once it was lost."""
        if not self._calls.lease_renew(
            self.key, self.owner.encode(), self.token, self.ttl if ttl is None else ttl
        ):
            raise LeaseLost

    def release(self) -> bool:
        """Let the lease go; False when it was already lost (expired or taken)."""
        return self._calls.lease_release(self.key, self.owner.encode(), self.token)

    def __enter__(self) -> Self:
        self.claim()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A lease lost before the block ended is reported, unless the block failed anyway.
        if not self.release() and t is None:
            raise LeaseLost


class AsyncLease(_Base):
    """A lease on one key for one owner; see :meth:`stashd.AsyncStash.lease`."""

    def __init__(self, calls: AsyncLeaseCalls, key: bytes, owner: str | None, ttl: int) -> None:
        super().__init__(key, owner, ttl)
        self._calls = calls

    async def claim(self) -> int:
        """Take the lease; its fencing token. Raises LeaseHeld while another owner holds it."""
        self._token = await self._calls.lease_claim(self.key, self.owner.encode(), self.ttl)
        return self._token

    async def renew(self, ttl: int | None = None) -> None:
        """A new TTL from now (the lease's own unless given); LeaseLost once it was lost."""
        if not await self._calls.lease_renew(
            self.key, self.owner.encode(), self.token, self.ttl if ttl is None else ttl
        ):
            raise LeaseLost

    async def release(self) -> bool:
        """Let the lease go; False when it was already lost (expired or taken)."""
        return await self._calls.lease_release(self.key, self.owner.encode(), self.token)

    async def __aenter__(self) -> Self:
        await self.claim()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not await self.release() and t is None:
            raise LeaseLost

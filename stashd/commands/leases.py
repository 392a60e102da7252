"""LEASE: a key owned by one owner for a TTL, with a fencing token that only grows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.commands.base import (
    FAST,
    READONLY,
    WRITE,
    Command,
    Deferred,
    Handler,
    Reply,
    Session,
    help_lines,
    int_arg,
    run_subcommand,
    subcommand_rows,
)
from stashd.errors import CommandError
from stashd.ops import held_lease

if TYPE_CHECKING:
    from stashd.ops import LeaseAnswer
    from stashd.types import Entry


def _ttl(raw: bytes) -> int:
    """A lease's TTL in seconds: an integer (its range is the memory service's rule)."""
    return int_arg(raw)


def _token(raw: bytes) -> int:
    """A fencing token as LEASE CLAIM returned it."""
    token = int_arg(raw)
    if token < 1:
        raise CommandError(f"token must be a token LEASE CLAIM returned, got {token}")
    return token


def _claimed(answer: LeaseAnswer) -> Reply:
    """The token of a granted claim; nil when another owner holds the lease (as SET NX)."""
    if not answer.granted or answer.lease is None:
        return None
    return answer.lease.token


def _done(answer: LeaseAnswer) -> Reply:
    """1 for a renew or release that was done, 0 for one refused."""
    return 1 if answer.granted else 0


def lease_claim(s: Session, args: list[bytes]) -> Reply:
    """LEASE CLAIM key owner seconds."""
    op = s.service.lease_claim(s.require(), args[2], args[3], _ttl(args[4]))
    return Deferred(op, _claimed)


def lease_renew(s: Session, args: list[bytes]) -> Reply:
    """LEASE RENEW key owner token seconds."""
    token = _token(args[4])
    op = s.service.lease_renew(s.require(), args[2], args[3], token, _ttl(args[5]))
    return Deferred(op, _done)


def lease_release(s: Session, args: list[bytes]) -> Reply:
    """LEASE RELEASE key owner token."""
    op = s.service.lease_release(s.require(), args[2], args[3], _token(args[4]))
    return Deferred(op, _done)


def lease_info(s: Session, args: list[bytes]) -> Reply:
    """LEASE INFO key: the holder, token and ms left; nil when no one holds it."""
    clock = s.service.clock

    def info(entry: Entry | None) -> Reply:
        lease = held_lease(entry)
        if lease is None:
            return None
        return {
            b"owner": lease.owner,
            b"token": lease.token,
            b"pttl": max(lease.expires_at - clock(), 0),
        }

    return Deferred(s.service.lease_info(s.require(), args[2]), info)


def lease_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """LEASE HELP."""
    return help_lines("LEASE", LEASE_SUBCOMMANDS)


def _row(  # noqa: PLR0917 - a table row's columns, in the table's order
    name: str, handler: Handler, arity: int, flags: tuple[str, ...], summary: str, syntax: str
) -> Command:
    keyed = "key" in syntax.split()
    return Command(
        name,
        handler,
        arity,
        flags,
        "lease",
        summary,
        syntax,
        "1.0.0",
        *((2, 2, 1) if keyed else ()),
    )


LEASE_SUBCOMMANDS: Final = (
    _row(
        "lease|claim",
        lease_claim,
        5,
        (WRITE, FAST),
        "Take a lease for an owner unless another holds it; returns its fencing token.",
        "LEASE CLAIM key owner seconds",
    ),
    _row(
        "lease|renew",
        lease_renew,
        6,
        (WRITE, FAST),
        "Give the owner's lease a new TTL from now; 1 if renewed, 0 if not held.",
        "LEASE RENEW key owner token seconds",
    ),
    _row(
        "lease|release",
        lease_release,
        5,
        (WRITE, FAST),
        "Let go of the owner's lease; 1 if released, 0 if not held.",
        "LEASE RELEASE key owner token",
    ),
    _row(
        "lease|info",
        lease_info,
        3,
        (READONLY, FAST),
        "A lease's owner, fencing token and milliseconds left.",
        "LEASE INFO key",
    ),
    _row(
        "lease|help", lease_help, 2, ("loading", "stale"), "The subcommands of LEASE.", "LEASE HELP"
    ),
)
_ROWS: Final = subcommand_rows(LEASE_SUBCOMMANDS)


def lease(s: Session, args: list[bytes]) -> Reply:
    """LEASE subcommand [argument ...]."""
    return run_subcommand(_ROWS, s, args)


COMMANDS: Final = (
    Command(
        "lease",
        lease,
        -2,
        (),
        "stash",
        "Leases with fencing tokens: claim, renew, release.",
        "LEASE subcommand [argument ...]",
        "1.0.0",
        subcommands=LEASE_SUBCOMMANDS,
    ),
)

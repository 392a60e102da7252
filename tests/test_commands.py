"""Command handlers run in-process on the memory store with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from stashd.commands import TABLE
from stashd.commands.base import Deferred, Session
from stashd.commands.server import human_bytes
from stashd.errors import CommandError, StashError, UnknownSubcommand, WrongArity
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import OpenKeyring
from stashd.types import Limits

LIMITS = Limits(max_payload=1000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)


class Clock:
    """A settable clock in ms."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def session(clock: Clock) -> Session:
    keyring = OpenKeyring(LIMITS)
    return Session(MemoryService(MemoryStore(clock)), keyring, keyring.anonymous())


def call(session: Session, *words: bytes) -> Any:
    """Run one request the way dispatch does (arity aside): handler, operation, reply."""
    try:
        reply = TABLE[words[0].lower()].handler(session, list(words))
        if type(reply) is Deferred:
            result = session.service.store.run(reply.op)
            reply = result if reply.finish is None else reply.finish(result)
    except StashError as exc:
        return exc
    return reply


@pytest.mark.parametrize(
    ("expires_ms", "seconds"),
    [(499, 1_700_000_100), (500, 1_700_000_101), (999, 1_700_000_101), (0, 1_700_000_100)],
)
def test_expiretime_rounds_to_the_nearest_second(
    session: Session, clock: Clock, expires_ms: int, seconds: int
) -> None:
    """EXPIRETIME rounds the expiry in ms to the nearest second, as Redis does."""
    at = b"%d" % (clock.now + 100_000 + expires_ms)
    assert call(session, b"SET", b"k", b"v", b"PXAT", at) == "OK"
    assert call(session, b"EXPIRETIME", b"k") == seconds
    assert call(session, b"PEXPIRETIME", b"k") == int(at)


def test_reset_leaves_multi_and_forgets_watches(session: Session) -> None:
    """RESET inside MULTI ends the transaction, drops the queue and every WATCH."""
    assert call(session, b"WATCH", b"k") == "OK"
    assert call(session, b"MULTI") == "OK"
    session.multi_dirty = True  # as after a queueing error
    assert session.multi is not None
    assert call(session, b"RESET") == "RESET"
    assert session.multi is None
    assert not session.multi_dirty
    assert session.watched == {}
    assert str(call(session, b"EXEC")) == "EXEC without MULTI"


def test_client_setinfo_names_the_attribute_in_its_error(session: Session) -> None:
    """A bad library name or version is refused in Redis's words, quoting the attribute."""
    err = call(session, b"CLIENT", b"SETINFO", b"lib-ver", b"1 2")
    assert isinstance(err, CommandError)
    assert err.wire == "ERR lib-ver cannot contain spaces, newlines or special characters."
    assert call(session, b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py") == "OK"
    assert session.lib_name == b"redis-py"
    assert session.lib_ver is None


@pytest.mark.parametrize("container", [b"CLIENT", b"COMMAND", b"CONFIG"])
def test_containers_answer_help_with_each_subcommand(session: Session, container: bytes) -> None:
    """HELP, which every unknown-subcommand error points to, lists each subcommand."""
    lines = call(session, container, b"HELP")
    assert (
        lines[0] == f"{container.decode()} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )
    row = TABLE[container.lower()]
    assert len(lines) == 1 + 2 * len(row.subcommands)
    for sub in row.subcommands:
        word = sub.name.partition("|")[2].upper()
        assert any(line.split(" ")[0] == word for line in lines[1::2]), word
    err = call(session, container, b"NOPE")
    assert isinstance(err, UnknownSubcommand)
    assert err.message.endswith(f"Try {container.decode()} HELP.")


def test_subcommand_arity_is_checked_per_subcommand(session: Session) -> None:
    """A subcommand with the wrong number of arguments is named as Redis names it."""
    err = call(session, b"CLIENT", b"NO-EVICT")
    assert isinstance(err, WrongArity)
    assert err.message == "wrong number of arguments for 'client|no-evict' command"
    assert str(call(session, b"CLIENT", b"NO-EVICT", b"maybe")) == "syntax error"
    assert call(session, b"CLIENT", b"no-evict", b"on") == "OK"


def test_client_reply_off_is_refused_rather_than_ignored(session: Session) -> None:
    """CLIENT REPLY OFF would leave a client waiting for no reply, so it is refused."""
    err = call(session, b"CLIENT", b"REPLY", b"OFF")
    assert isinstance(err, CommandError)
    assert "not supported" in err.message
    assert call(session, b"CLIENT", b"REPLY", b"on") == "OK"


def test_command_docs_lists_subcommands_with_their_own_arguments(session: Session) -> None:
    """COMMAND DOCS gives a container's subcommands, as redis-cli's hints expect."""
    docs = call(session, b"COMMAND", b"DOCS", b"client")
    subs = docs[b"client"][b"subcommands"]
    assert b"arguments" not in docs[b"client"]
    setname = subs[b"client|setname"]
    assert setname[b"arguments"] == [{b"name": b"connection-name", b"type": b"string"}]
    info = call(session, b"COMMAND", b"INFO", b"config")
    assert [sub[0] for sub in info[0][9]] == [b"config|get", b"config|help"]


def test_command_docs_give_a_keyword_and_its_value_as_one_argument(session: Session) -> None:
    """UPDATE's EXTEND seconds reads as Redis documents SET's EX seconds: a value with its token."""
    args = call(session, b"COMMAND", b"DOCS", b"update")[b"update"][b"arguments"]
    by_token = {a.get(b"token"): a for a in args if b"token" in a}
    assert by_token[b"EXTEND"] == {
        b"name": b"seconds",
        b"type": b"integer",
        b"token": b"EXTEND",
        b"flags": {"optional"},
    }
    assert by_token[b"IFVERSION"][b"name"] == b"version"
    choice = next(a for a in args if a[b"type"] == b"oneof")
    assert [(a[b"token"], a[b"name"]) for a in choice[b"arguments"]] == [
        (b"DATA", b"json"),
        (b"MERGE", b"json"),
    ]
    ex = call(session, b"COMMAND", b"DOCS", b"stash")[b"stash"][b"arguments"]
    assert {a[b"token"]: a[b"type"] for a in ex[1][b"arguments"]} == {
        b"EX": b"integer",
        b"PX": b"integer",
    }


def test_info_of_no_known_section_is_empty(session: Session) -> None:
    """INFO with only unknown sections is an empty string, as in Redis."""
    assert str(call(session, b"INFO", b"nosuch")) == ""
    assert str(call(session, b"INFO", b"keyspace")) == "# Keyspace\r\n"


def test_info_writes_sizes_for_people_as_redis_does() -> None:
    """used_memory_human: bytes below 1 KiB, then two decimals of K, M, G, T, P."""
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30, 2**60)] == [
        "0B",
        "1023B",
        "1.00K",
        "1.50K",
        "5.00M",
        "3.00G",
        "1024.00P",
    ]

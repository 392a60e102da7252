"""from_wire: every error class comes back from its wire text with the same attributes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stashd import errors
from stashd.errors import StashError, from_wire
from stashd.jsontext import too_deep


# One instance of every class, with numbers that differ from each other so a swapped
# attribute shows. A class added to stashd.errors without a sample here fails the
# completeness test below.
def _coded(code: str, message: str) -> StashError:
    """A bare StashError with a code of its own (a bare one with ERR is a CommandError)."""
    exc = StashError(message)
    exc.code = code
    return exc


SAMPLES: dict[type[StashError], StashError] = {
    StashError: _coded("NOPERM", "this user has no permissions to run the 'x' command"),
    errors.CommandError: errors.CommandError("DB index is out of range"),
    errors.SyntaxErr: errors.SyntaxErr(),
    errors.NotInteger: errors.NotInteger(),
    errors.IncrOverflow: errors.IncrOverflow(),
    errors.NotFloat: errors.NotFloat(),
    errors.FloatOverflow: errors.FloatOverflow(),
    errors.WrongArity: errors.WrongArity("GET"),
    errors.UnknownCommand: errors.UnknownCommand("FOO", ["a", "b c", "x'y"]),
    errors.UnknownSubcommand: errors.UnknownSubcommand("nope", "client"),
    errors.EmptyUpdate: errors.EmptyUpdate(),
    errors.DataAndMerge: errors.DataAndMerge(),
    errors.BadExtend: errors.BadExtend(-5),
    errors.NoSuchKey: errors.NoSuchKey(),
    errors.ProtocolError: errors.ProtocolError("invalid bulk length"),
    errors.QueryBufferFull: errors.QueryBufferFull(1024, 4096),
    errors.MaxClients: errors.MaxClients(),
    errors.QueueFull: errors.QueueFull(3146322, 3145728, "on this connection"),
    errors.TransactionAborted: errors.TransactionAborted("RecursionError"),
    errors.InternalError: errors.InternalError("get", "RuntimeError"),
    errors.StoreUnavailable: errors.StoreUnavailable("disk I/O error"),
    errors.AuthenticationError: errors.NoAuth("custom refusal"),
    errors.NoAuth: errors.NoAuth(),
    errors.HelloNoAuth: errors.HelloNoAuth(),
    errors.WrongPass: errors.WrongPass(),
    errors.NoProto: errors.NoProto(),
    errors.PayloadTooLarge: errors.PayloadTooLarge(1048576, 2097153),
    errors.InvalidTTL: errors.InvalidTTL(90000, 86400),
    errors.TTLNotPositive: errors.TTLNotPositive(-3, 86400),
    errors.PersistRefused: errors.PersistRefused(86400),
    errors.NotJSON: errors.NotJSON(
        "Expecting value at line 2 column 5 (char 9)", "merge patch", line=2, column=5, position=9
    ),
    errors.StoredNotJSON: errors.StoredNotJSON(
        "Expecting value at line 1 column 1 (char 0)", line=1, column=1, position=0
    ),
    errors.Conflict: errors.Conflict(3, 2),
    errors.LeaseHeld: errors.LeaseHeld(1500),
    errors.LeaseLost: errors.LeaseLost(),
    errors.WrongType: errors.WrongType(),
    errors.NoScript: errors.NoScript(),
    errors.NotBusy: errors.NotBusy(),
    errors.ScriptTimeLimit: errors.ScriptTimeLimit(5000),
    errors.Busy: errors.Busy(),
    errors.ScriptKilled: errors.ScriptKilled(),
    errors.ScriptOutOfMemory: errors.ScriptOutOfMemory(64 * 1024 * 1024),
    errors.RateLimited: errors.RateLimited(1250),
    errors.QuotaExceeded: errors.QuotaExceeded(901, 945815452, 10000, 104857600),
    errors.OutOfMemory: errors.OutOfMemory(),
    errors.NotFound: errors.NotFound(),
    errors.MethodNotAllowed: errors.MethodNotAllowed("PUT", ("GET", "DELETE")),
    errors.NoRoute: errors.NoRoute(),
    errors.InvalidRequest: errors.InvalidRequest("limit must be between 1 and 1000, got 0"),
    errors.BadRequest: errors.BadRequest("both X-API-KEY and Authorization were sent"),
    errors.IncompleteBody: errors.IncompleteBody(100, 42),
    errors.RequestTimeout: errors.RequestTimeout(9.5),
    errors.UnsupportedEncoding: errors.UnsupportedEncoding(),
    errors.BodyTooLarge: errors.BodyTooLarge(1024, 4096),
}

# Further forms of the same classes: messages without a position, optional numbers.
MORE: list[StashError] = [
    errors.NotJSON("NaN is not a JSON value"),
    errors.NotJSON("invalid UTF-8 at byte 3"),
    too_deep(2000),
    too_deep(2000, "merge patch"),
    errors.StoredNotJSON(errors.nested_past(600, 512), limit=512, actual=600),
    errors.StoredNotJSON("invalid UTF-8 at byte 0"),
    errors.BodyTooLarge(1024, None),
    errors.MethodNotAllowed("GET/../x", ("POST",)),
    errors.UnknownCommand("x", []),
]


def _all_classes(base: type[StashError]) -> set[type[StashError]]:
    """``base`` and every subclass defined in stashd.errors (doors may subclass privately)."""
    found = {base}
    for sub in base.__subclasses__():
        found |= _all_classes(sub)
    return {cls for cls in found if cls.__module__ == errors.__name__}


def test_every_class_has_a_sample() -> None:
    """The samples cover every error class there is, so none escapes the round trip."""
    assert set(SAMPLES) == _all_classes(StashError)


def _same(a: StashError, b: StashError) -> None:
    assert type(a) is type(b), (a.wire, type(a), type(b))
    assert vars(a) == vars(b)
    assert a.args == b.args
    assert a.wire == b.wire


# The texts themselves, byte for byte: clients match on them, so a change to a template
# shows here first (they were taken from the hand-written messages the templates replaced).
WIRE_TEXTS: list[tuple[StashError, str]] = [
    (errors.SyntaxErr(), "ERR syntax error"),
    (errors.NotInteger(), "ERR value is not an integer or out of range"),
    (errors.IncrOverflow(), "ERR increment or decrement would overflow"),
    (errors.NotFloat(), "ERR value is not a valid float"),
    (errors.FloatOverflow(), "ERR increment would produce NaN or Infinity"),
    (errors.WrongArity("GET"), "ERR wrong number of arguments for 'get' command"),
    (
        errors.UnknownCommand("FOO", ["a", "b c", "x'y"]),
        "ERR unknown command 'FOO', with args beginning with: 'a' 'b c' 'x'y' ",
    ),
    (errors.UnknownCommand("x", []), "ERR unknown command 'x', with args beginning with: "),
    (errors.UnknownSubcommand("nope", "client"), "ERR unknown subcommand 'nope'. Try CLIENT HELP."),
    (errors.EmptyUpdate(), "ERR UPDATE needs at least one of DATA, MERGE or EXTEND"),
    (errors.DataAndMerge(), "ERR DATA and MERGE cannot be used together"),
    (errors.BadExtend(-5), "ERR EXTEND needs a positive number of seconds, got -5"),
    (errors.NoSuchKey(), "ERR no such key"),
    (errors.ProtocolError("invalid bulk length"), "ERR Protocol error: invalid bulk length"),
    (
        errors.QueryBufferFull(1024, 4096),
        "ERR Protocol error: request needs at least 4096 bytes of query buffer, the limit is 1024 bytes",
    ),
    (errors.MaxClients(7), "ERR max number of clients reached"),
    (
        errors.QueueFull(3146322, 3145728, "on this connection"),
        "ERR queued MULTI requests would hold 3146322 bytes on this connection, the limit is 3145728 bytes",
    ),
    (
        errors.InternalError("get", "RuntimeError"),
        "ERR internal error in 'get' command (RuntimeError); it was logged",
    ),
    (
        errors.TransactionAborted("RecursionError"),
        "ERR transaction aborted by an internal error (RecursionError); none of its commands were applied",
    ),
    (errors.StoreUnavailable("disk I/O error"), "UNAVAILABLE store unavailable: disk I/O error"),
    (errors.NoAuth(), "NOAUTH Authentication required."),
    (
        errors.HelloNoAuth(),
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
    ),
    (errors.WrongPass(), "WRONGPASS invalid username-password pair or user is disabled."),
    (errors.NoProto(), "NOPROTO unsupported protocol version"),
    (
        errors.PayloadTooLarge(1048576, 2097153),
        "TOOLARGE value is 2097153 bytes, the limit is 1048576 bytes",
    ),
    (
        errors.InvalidTTL(90000, 86400),
        "BADTTL ttl 90000 seconds exceeds the maximum of 86400 seconds",
    ),
    (errors.TTLNotPositive(-3, 86400), "BADTTL ttl must be between 1 and 86400 seconds, got -3"),
    (
        errors.PersistRefused(86400),
        "ERR PERSIST is not supported: every key in Stash expires (maximum ttl 86400 seconds)",
    ),
    (
        errors.NotJSON(
            "Expecting value at line 2 column 5 (char 9)",
            "merge patch",
            line=2,
            column=5,
            position=9,
        ),
        "NOTJSON merge patch is not valid JSON: Expecting value at line 2 column 5 (char 9)",
    ),
    (
        errors.StoredNotJSON(errors.nested_past(600, 512), limit=512, actual=600),
        "NOTJSON stored value is not valid JSON: nested 600 levels deep, the limit is 512 levels",
    ),
    (errors.Conflict(3, 2), "CONFLICT version is 3, IFVERSION expected 2"),
    (errors.RateLimited(1250), "RATELIMIT rate limit exceeded, retry after 1250 ms"),
    (
        errors.QuotaExceeded(901, 945815452, 10000, 104857600),
        "QUOTA namespace would hold 901 keys (945815452 bytes), the limit is 10000 keys and 104857600 bytes",
    ),
    (
        errors.QuotaExceeded(901, 945815452, 10000, 0),
        "QUOTA namespace would hold 901 keys (945815452 bytes), the limit is 10000 keys",
    ),
    (
        errors.QuotaExceeded(901, 945815452, 0, 104857600),
        "QUOTA namespace would hold 901 keys (945815452 bytes), the limit is 104857600 bytes",
    ),
    (
        errors.QuotaExceeded(1, 2, 0, 0),
        "QUOTA namespace would hold 1 keys (2 bytes), the limit is none",
    ),
    (errors.OutOfMemory(), "OOM command not allowed when used memory > 'maxmemory'."),
    (errors.NotFound(), "NOTFOUND no memory with this id"),
    (
        errors.MethodNotAllowed("PUT", ("GET", "DELETE")),
        "METHOD PUT is not allowed here; use GET, DELETE",
    ),
    (
        errors.MethodNotAllowed("GET/../x", ("POST",)),
        "METHOD this method is not allowed here; use POST",
    ),
    (errors.NoRoute(), "NOROUTE no such endpoint; GET /openapi.yaml lists them"),
    (
        errors.IncompleteBody(100, 42),
        "INCOMPLETE request body has 42 bytes, its Content-Length announced 100",
    ),
    (errors.RequestTimeout(9.5), "TIMEOUT request did not arrive within 9.5 seconds"),
    (errors.RequestTimeout(99999999.0), "TIMEOUT request did not arrive within 1e+08 seconds"),
    (
        errors.UnsupportedEncoding(),
        "ENCODING request bodies must not be compressed (Content-Encoding: identity)",
    ),
    (
        errors.BodyTooLarge(1024, 4096),
        "TOOLARGE request body is 4096 bytes, the limit is 1024 bytes",
    ),
    (errors.BodyTooLarge(1024, None), "TOOLARGE request body is over the limit of 1024 bytes"),
]


def test_wire_texts_are_the_protocols() -> None:
    """Every class renders exactly the text the protocol has always carried, and reads it."""
    for exc, text in WIRE_TEXTS:
        assert exc.wire == text
        assert type(from_wire(text)) is type(exc), text


def test_every_class_round_trips_with_its_attributes() -> None:
    """from_wire(e.wire) is an exception of e's class with e's attributes and text."""
    for exc in [*SAMPLES.values(), *MORE]:
        _same(from_wire(exc.wire), exc)


def test_numbers_come_back_as_numbers() -> None:
    """The attributes callers use are typed values, not text."""
    too_large = from_wire("TOOLARGE value is 2000 bytes, the limit is 1000 bytes")
    assert isinstance(too_large, errors.PayloadTooLarge)
    assert (too_large.limit, too_large.actual) == (1000, 2000)
    limited = from_wire("RATELIMIT rate limit exceeded, retry after 1500 ms")
    assert isinstance(limited, errors.RateLimited)
    assert limited.retry_after == 1.5
    conflict = from_wire("CONFLICT version is 4, IFVERSION expected 1")
    assert isinstance(conflict, errors.Conflict)
    assert (conflict.current, conflict.expected) == (4, 1)


def test_unknown_texts_keep_their_code_and_message() -> None:
    """A code this server never sends becomes a StashError that still reads the same."""
    exc = from_wire("MOVED 3999 127.0.0.1:6381")
    assert type(exc) is StashError
    assert exc.code == "MOVED"
    assert exc.wire == "MOVED 3999 127.0.0.1:6381"
    err = from_wire("ERR DB index is out of range")
    assert type(err) is errors.CommandError
    odd = from_wire("TIMEOUT request did not arrive within soon seconds")
    assert type(odd) is StashError
    assert odd.wire == "TIMEOUT request did not arrive within soon seconds"


_CODES = st.sampled_from(
    sorted({c.code for c in _all_classes(StashError)} | {"MOVED", "WRONGTYPE"})
)
_LINE = st.text(st.characters(blacklist_characters="\r\n"), max_size=60)


@given(code=_CODES, message=_LINE)
def test_any_error_line_reads_back_unchanged(code: str, message: str) -> None:
    """Whatever a server sends, the error raised carries exactly that text."""
    text = f"{code} {message}"
    assert from_wire(text).wire == text


@given(current=st.integers(-(2**63), 2**63 - 1), expected=st.integers(-(2**63), 2**63 - 1))
def test_conflict_numbers_survive_any_size(current: int, expected: int) -> None:
    """Versions are 64-bit numbers; all of them come back as they went."""
    _same(from_wire(errors.Conflict(current, expected).wire), errors.Conflict(current, expected))

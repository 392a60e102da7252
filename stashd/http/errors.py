"""The HTTP door's error table: each StashError's status, code and fields, rendered as JSON once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.errors import (
    BadExtend,
    BadRequest,
    BodyTooLarge,
    Busy,
    CommandError,
    Conflict,
    DataAndMerge,
    EmptyUpdate,
    IncompleteBody,
    InvalidRequest,
    InvalidTTL,
    LeaseHeld,
    LeaseLost,
    MaxClients,
    MethodNotAllowed,
    NoAuth,
    NoRoute,
    NotFound,
    NotJSON,
    OutOfMemory,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    StashError,
    StoredNotJSON,
    StoreUnavailable,
    TTLNotPositive,
    UnsupportedEncoding,
    WrongPass,
    WrongType,
)
from stashd.errorwire import TextField
from stashd.http.answer import ENCODE, closing_answer, response

if TYPE_CHECKING:
    from aiohttp import web

#: Seconds a client refused for --max-clients is told to wait (Retry-After): slots come
#: free as other clients finish, idle keep-alive ones within the server's IDLE_TIMEOUT.
FULL_RETRY_AFTER: Final = 1

# One table: error class -> (HTTP status, code). A class missing here is looked up by
# its bases, so every StashError has an answer. The fields an answer reports are the
# ones the class declares (stashd.errors), its numbers and the JSON field it names.
ERRORS: Final[dict[type[StashError], tuple[int, str]]] = {
    BadRequest: (400, "bad_request"),
    NotJSON: (400, "invalid_json"),
    IncompleteBody: (400, "incomplete_body"),
    CommandError: (400, "bad_request"),
    NoAuth: (401, "unauthorized"),
    WrongPass: (401, "invalid_api_key"),
    NotFound: (404, "not_found"),
    NoRoute: (404, "not_found"),
    MethodNotAllowed: (405, "method_not_allowed"),
    RequestTimeout: (408, "request_timeout"),
    StoredNotJSON: (409, "stored_value_not_json"),
    Conflict: (412, "version_mismatch"),
    WrongType: (409, "wrong_type"),
    LeaseHeld: (409, "lease_held"),
    LeaseLost: (409, "lease_not_owned"),
    PayloadTooLarge: (413, "payload_too_large"),
    BodyTooLarge: (413, "payload_too_large"),
    UnsupportedEncoding: (415, "unsupported_encoding"),
    InvalidRequest: (422, "invalid_request"),
    EmptyUpdate: (422, "invalid_request"),
    DataAndMerge: (422, "invalid_request"),
    InvalidTTL: (422, "invalid_ttl"),
    TTLNotPositive: (422, "invalid_ttl"),
    BadExtend: (422, "invalid_ttl"),
    RateLimited: (429, "rate_limited"),
    MaxClients: (503, "max_clients_reached"),
    StoreUnavailable: (503, "unavailable"),
    Busy: (503, "busy"),
    QuotaExceeded: (507, "quota_exceeded"),
    OutOfMemory: (507, "out_of_memory"),
    StashError: (400, "bad_request"),
}

# Where the RESP text names RESP syntax, the HTTP answer names the JSON field instead;
# templates are filled from the error's attributes.
HTTP_WORDS: Final[dict[type[StashError], str]] = {
    EmptyUpdate: "PATCH needs at least one of data, merge or extra_seconds",
    DataAndMerge: "data and merge cannot be used together",
    BadExtend: "extra_seconds must be a positive number, got {requested}",
    Conflict: "version is {current}, If-Match expected {expected}",
    NoAuth: "an API key is required: send X-API-KEY or Authorization: Bearer",
    WrongPass: "the API key is not valid",
}

#: The answer to a failure of our own: it says nothing about the request or the failure.
INTERNAL_ERROR: Final = b'{"error":{"code":"internal_error","message":"internal error"}}'


def error_row(kind: type[StashError]) -> tuple[int, str, tuple[str, ...]]:
    """An error class's status, code and reported fields (its base's row when it has none)."""
    for cls in kind.__mro__:
        row = ERRORS.get(cls)
        if row is not None:
            status, code = row
            return status, code, reported(kind)
    return (*ERRORS[StashError], ())  # pragma: no cover - StashError is in every MRO here


def reported(kind: type[StashError]) -> tuple[str, ...]:
    """The fields an answer names: the class's numbers, and the JSON field it is about.

    Free text fields (a cause, a quoted command) are already in the message.
    """
    return tuple(
        name for name, f in kind.fields.items() if not isinstance(f, TextField) or name == "field"
    )


def error_object(
    exc: StashError, words: dict[type[StashError], str] = HTTP_WORDS
) -> tuple[int, dict[str, Any]]:
    """The status and the one JSON shape of every error: code, message, applicable fields.

    ``words`` tells the messages that name RESP syntax in the door's own terms (the
    HTTP API's fields by default; the MCP tools' arguments for that door).
    """
    status, code, names = error_row(type(exc))
    text = words.get(type(exc))
    message = exc.message if text is None else exc.worded(text)
    err: dict[str, Any] = {"code": code, "message": message}
    for name in names:
        value = getattr(exc, name, None)
        if value is not None:
            err[name] = list(value) if isinstance(value, tuple) else value
    return status, err


def error_body(exc: StashError) -> tuple[int, bytes]:
    """The status and the JSON body of an error's HTTP answer."""
    status, err = error_object(exc)
    return status, ENCODE({"error": err}).encode()


def error_response(exc: StashError, headers: dict[str, str] | None = None) -> web.Response:
    """An error as a response; 401 says how to authenticate, 405 what is allowed.

    ``headers`` (the 429's rate-limit fields) come first.
    """
    status, body = error_body(exc)
    fields = dict(headers) if headers else {}
    fields.update(error_fields(exc, status))
    return response(status, body, fields)


def error_fields(exc: StashError, status: int) -> dict[str, str]:
    """The header fields an error's status calls for."""
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="stash"'}
    if status == 415:
        return {"Accept-Encoding": "identity"}  # RFC 7694
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": ", ".join(exc.allowed)}
    if isinstance(exc, MaxClients):
        return {"Retry-After": str(FULL_RETRY_AFTER)}
    return {}


def refusal(limit: int) -> bytes:
    """The whole answer of a connection over --max-clients, sent before it is closed.

    It is written before the request is read: a refused client gets no further.
    """
    exc = MaxClients(limit)
    status, body = error_body(exc)
    return closing_answer(status, body, error_fields(exc, status))


def internal_error() -> web.Response:
    """The 500 of a failure of our own; the connection ends with it."""
    resp = response(500, INTERNAL_ERROR)
    resp.force_close()
    return resp

"""Where Redis or Valkey is and how to talk to it: the settings a Redis URL gives.

A URL is read once into a :class:`RedisTarget`, and every link made from it
(:mod:`stashd.redislink`) uses the same host, credentials, database, TLS settings and
timeouts. ``rediss://`` is TLS with the server's certificate checked against the
system's CAs (or ``ssl_ca_certs``) and its host name checked, unless
``ssl_cert_reqs=none`` turns that off explicitly.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

#: Schemes a URL may use. ``+cluster`` marks a Redis Cluster (like ``--redis-cluster``).
SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
#: Seconds to set up a connection (TCP, TLS, AUTH): short, so that a Redis that is down
#: or unreachable turns into a clear error for clients instead of a long wait.
CONNECT_TIMEOUT: Final = 2.0
#: Seconds a round may wait for its replies before the connection is dropped and the
#: round fails. Long enough for the largest payload (500 MiB on the enterprise tier
#: takes seconds over a network); ``socket_timeout`` in the URL changes it.
REPLY_TIMEOUT: Final = 10.0
#: After a failed attempt to connect, rounds fail at once for this long, with the same
#: error, instead of each trying again: a dead Redis costs clients nothing extra, and a
#: Redis's default port.
DEFAULT_PORT: Final = 6379

_CERT_REQS: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is and how to talk to it, from a URL (see :meth:`parse`)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str = ""  # a Unix socket instead of host and port
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True
    connect_timeout: float = CONNECT_TIMEOUT
    timeout: float = REPLY_TIMEOUT
    cluster: bool = False

    @classmethod
    def parse(cls, url: str, *, cluster: bool = False) -> RedisTarget:
        """Read ``redis://[user[:password]@]host[:port][/db][?option=value...]``.

        Also ``rediss://`` (TLS), ``unix:///path?db=N``, and ``redis+cluster://`` /
        ``rediss+cluster://`` for a Redis Cluster. Options, as redis-py names them:
        ``db``, ``socket_timeout``, ``socket_connect_timeout``, ``ssl_cert_reqs``
        (required, optional, none), ``ssl_ca_certs``, ``ssl_certfile``,
        ``ssl_keyfile``, ``ssl_check_hostname``. A ValueError names what is wrong.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            schemes = ", ".join(f"{s}://" for s in SCHEMES)
            msg = f"a Redis URL starts with {schemes}; got {_redact(url)!r}"
            raise ValueError(msg)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        known = {
            "db",
            "socket_timeout",
            "socket_connect_timeout",
            "ssl_cert_reqs",
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
            "ssl_check_hostname",
        }
        unknown = sorted(set(query) - known)
        if unknown:
            msg = (
                f"unknown option {unknown[0]!r} in the Redis URL; "
                f"options are {', '.join(sorted(known))}"
            )
            raise ValueError(msg)
        values: dict[str, Any] = {
            "cluster": cluster or scheme.endswith("+cluster"),
            "tls": scheme.startswith("rediss"),
        }
        if scheme == "unix":
            if not parts.path:
                raise ValueError(
                    "a unix:// Redis URL needs the socket's path: unix:///run/redis.sock"
                )
            values["path"] = unquote(parts.path)
        else:
            try:
                port = parts.port
            except ValueError:
                msg = (
                    "the port in the Redis URL must be a number from 1 to 65535; "
                    f"got {_redact(url)!r}"
                )
                raise ValueError(msg) from None
            values["host"] = parts.hostname or "127.0.0.1"
            values["port"] = port or DEFAULT_PORT
            db_text = parts.path.lstrip("/")
            if db_text:
                values["db"] = _int_option("database number", db_text)
        if parts.username:
            values["username"] = unquote(parts.username)
        if parts.password is not None:
            values["password"] = unquote(parts.password)
        if "db" in query:
            values["db"] = _int_option("db", query["db"])
        if "socket_timeout" in query:
            values["timeout"] = _seconds("socket_timeout", query["socket_timeout"])
        if "socket_connect_timeout" in query:
            values["connect_timeout"] = _seconds(
                "socket_connect_timeout", query["socket_connect_timeout"]
            )
        if "ssl_cert_reqs" in query:
            reqs = query["ssl_cert_reqs"].lower()
            if reqs not in _CERT_REQS:
                given = query["ssl_cert_reqs"]
                msg = f"ssl_cert_reqs must be required, optional or none; got {given!r}"
                raise ValueError(msg)
            values["cert_reqs"] = reqs
            if reqs == "none":
                values["check_hostname"] = False
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if query.get(name):
                values[name.removeprefix("ssl_")] = query[name]
        if "ssl_check_hostname" in query:
            values["check_hostname"] = _flag("ssl_check_hostname", query["ssl_check_hostname"])
        target = cls(**values)
        if target.cluster and (target.path or target.db):
            raise ValueError("a Redis Cluster has only database 0 and is reached over TCP")
        try:
            target.ssl_context()  # a missing or broken certificate file is a setting's fault
        except TLSFileError as exc:
            raise ValueError(str(exc)) from None
        return target

    def display(self) -> str:
        """The target as a URL without credentials, for logs and error messages."""
        if self.path:
            return f"unix://{self.path}?db={self.db}"
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of ``rediss://`` (None for plain TCP)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFileError("ssl_ca_certs", self.ca_certs or "", exc) from None
        context.check_hostname = self.check_hostname and self.cert_reqs != "none"
        context.verify_mode = _CERT_REQS[self.cert_reqs]
        if self.certfile:
            try:
                context.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                files = self.certfile + (f" and {self.keyfile}" if self.keyfile else "")
                raise TLSFileError("ssl_certfile/ssl_keyfile", files, exc) from None
        return context


class TLSFileError(OSError):
    """A certificate or key file of a ``rediss://`` URL cannot be read; names the option."""

    def __init__(self, option: str, path: str, cause: OSError | ssl.SSLError) -> None:
        reason = cause.strerror or str(cause)
        super().__init__(f"{option} {path}: cannot be read as PEM: {reason}")

    def __str__(self) -> str:
        return str(self.args[0])


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def _int_option(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} in the Redis URL must be an integer; got {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} in the Redis URL must not be negative; got {value}")
    return value


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} in the Redis URL must be seconds; got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{name} in the Redis URL must be positive; got {text!r}")
    return value


def _flag(name: str, text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{name} in the Redis URL must be true or false; got {text!r}")

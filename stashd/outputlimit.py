"""Client output buffer limits, in Redis's ``client-output-buffer-limit`` form and meaning.

A connection whose unsent replies pass the hard limit, or stay past the soft limit for
longer than its seconds, is disconnected: without this, a client that sends small
requests for large replies and never reads makes the server hold every reply. Limits
are per class of connection (``normal``, and ``pubsub`` for subscribed connections), as
Redis has them; ``0`` turns a limit off, as in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from stashd.sizes import parse_size

#: What ``--client-output-buffer-limit`` defaults to. Redis leaves normal clients
#: unlimited; Stash serves many tenants from one process, so a normal connection is cut
#: at 64 MiB of unsent replies, or after 60 s above 16 MiB. A client that reads its
#: replies never comes near: the server stops reading a connection's requests while its
#: replies wait (see stashd.server), so only a single reply larger than the limit, or a
#: client that stops reading for good, meets it.
DEFAULT: Final = "normal 64mb 16mb 60 pubsub 32mb 8mb 60"

CLASSES: Final = ("normal", "pubsub")


@dataclass(frozen=True, slots=True)
class OutputLimit:
    """One class's limits: bytes (0 means none) and how long the soft one may be exceeded."""

    hard: int
    soft: int
    soft_seconds: int

    def over(self, buffered: int, over_soft_since: float | None, now: float) -> str | None:
        """Which limit ``buffered`` unsent bytes break ("hard", "soft"), or None.

        ``over_soft_since`` is when the buffer last went above the soft limit (None when
        it is below): the soft limit breaks once it has been exceeded for longer than
        ``soft_seconds``, as Redis measures it.
        """
        if self.hard and buffered > self.hard:
            return "hard"
        if (
            self.soft
            and buffered > self.soft
            and over_soft_since is not None
            and now - over_soft_since >= self.soft_seconds
        ):
            return "soft"
        return None


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """The limits of every connection class."""

    normal: OutputLimit
    pubsub: OutputLimit

    @classmethod
    def parse(cls, text: str) -> OutputLimits:
        """Read Redis's form: ``<class> <hard> <soft> <soft seconds>`` repeated.

        Classes left out keep their defaults, as in Redis's ``CONFIG SET``. Raises
        ValueError naming what cannot be read.
        """
        words = text.split()
        if not words or len(words) % 4:
            raise ValueError(
                "client_output_buffer_limit takes groups of '<class> <hard> <soft> <seconds>', "
                f"got {text!r}"
            )
        found = dict(_groups(DEFAULT.split()))
        found.update(_groups(words))
        return cls(found["normal"], found["pubsub"])

    def render(self) -> str:
        """The setting as CONFIG GET shows it: bytes, every class."""
        return " ".join(
            f"{name} {lim.hard} {lim.soft} {lim.soft_seconds}"
            for name, lim in (("normal", self.normal), ("pubsub", self.pubsub))
        )


def _groups(words: list[str]) -> list[tuple[str, OutputLimit]]:
    out = []
    for i in range(0, len(words), 4):
        name = words[i].lower()
        if name not in CLASSES:
            raise ValueError(
                f"client_output_buffer_limit: unknown class {words[i]!r}, "
                f"expected one of {', '.join(CLASSES)}"
            )
        hard = parse_size(words[i + 1], "client_output_buffer_limit")
        soft = parse_size(words[i + 2], "client_output_buffer_limit")
        try:
            seconds = int(words[i + 3])
        except ValueError:
            seconds = -1
        if seconds < 0:
            raise ValueError(
                f"client_output_buffer_limit: soft seconds of {name} must be a whole number "
                f"of seconds, got {words[i + 3]!r}"
            )
        out.append((name, OutputLimit(hard, soft, seconds)))
    return out

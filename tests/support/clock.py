"""A clock tests move by hand, for stores, limiters and anything else that takes one."""

from __future__ import annotations


class Clock:
    """Returns ``now`` (ms) until a test changes it; stores and limiters take it as a clock."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

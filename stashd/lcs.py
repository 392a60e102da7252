"""The longest common subsequence of two strings, as Redis's LCS reports it.

Redis fills the whole dynamic-programming table, one 32-bit cell per pair of
positions. Here each row of that table is one integer used as a bit vector (Hyyrö's
bit-parallel form: a set bit marks a column where the row's count does not go up), so
a row costs a few big-integer steps instead of a Python loop over its cells, and the
table takes one bit per cell. The walk back from the last cell follows Redis's
choices step by step, so the subsequence and the match ranges are the ones Redis
gives for the same strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Match:
    """One run of common bytes: its first and last position in each string."""

    a_start: int
    a_end: int
    b_start: int
    b_end: int

    @property
    def length(self) -> int:
        """How many bytes the run holds."""
        return self.a_end - self.a_start + 1


@dataclass(slots=True)
class Common:
    """What LCS found: the subsequence's length, the subsequence, and its runs."""

    length: int
    text: bytes = b""
    matches: list[Match] = field(default_factory=list)


def _rows(a: bytes, b: bytes) -> list[int]:
    """Row i's bit vector for i in 0..len(a): bit j set when LCS(i, j+1) == LCS(i, j)."""
    n = len(b)
    full = (1 << n) - 1
    where: dict[int, int] = {}
    for j, byte in enumerate(b):
        where[byte] = where.get(byte, 0) | (1 << j)
    v = full
    rows = [v]
    for byte in a:
        u = v & where.get(byte, 0)
        v = ((v + u) | (v - u)) & full
        rows.append(v)
    return rows


def length(a: bytes, b: bytes) -> int:
    """The length of the longest common subsequence."""
    if not a or not b:
        return 0
    return len(b) - _rows(a, b)[-1].bit_count()


def common(a: bytes, b: bytes, min_match: int = 0) -> Common:
    """The subsequence and its runs (those of at least ``min_match`` bytes), last first.

    Runs come in the order Redis emits them: from the ends of the strings backward.
    """
    if not a or not b:
        return Common(0)
    rows = _rows(a, b)

    def cell(i: int, j: int) -> int:  # LCS(a[:i], b[:j])
        return j - (rows[i] & ((1 << j) - 1)).bit_count()

    total = cell(len(a), len(b))
    out = bytearray(total)
    idx = total
    matches: list[Match] = []
    i, j = len(a), len(b)
    run: Match | None = None
    while i > 0 and j > 0:
        emit = False
        if a[i - 1] == b[j - 1]:
            out[idx - 1] = a[i - 1]
            if run is None:
                run = Match(i - 1, i - 1, j - 1, j - 1)
            elif run.a_start == i and run.b_start == j:
                run.a_start -= 1
                run.b_start -= 1
            else:
                emit = True
            if run.a_start == 0 or run.b_start == 0:
                emit = True
            idx -= 1
            i -= 1
            j -= 1
        else:
            if cell(i - 1, j) > cell(i, j - 1):
                i -= 1
            else:
                j -= 1
            if run is not None:
                emit = True
        if emit and run is not None:
            if min_match == 0 or run.length >= min_match:
                matches.append(run)
            run = None
    return Common(total, bytes(out), matches)

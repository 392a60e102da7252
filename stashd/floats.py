"""Redis's float counters exactly: x87 80-bit long double arithmetic and its text form.

INCRBYFLOAT and HINCRBYFLOAT in Redis parse with ``strtold``, add in ``long double``
(on x86-64 the 80-bit extended format: a 64-bit significand) and print with
``%.17Lf``, trailing zeros trimmed. A Python float has a 53-bit significand, so it
would answer ``0.1 + 0.2`` differently from Redis; here every step is done in exact
rational arithmetic and rounded as the hardware rounds, so a counter reads the same
digits on Stash as on Redis.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Final

from stashd.errors import CommandError, FloatOverflow, NotFloat

#: Bits of the significand, and the exponent of the smallest subnormal (2**-16445) and
#: the bound past which a value is infinite (2**16384), of the x87 extended format.
_BITS: Final = 64
_MIN_EXP: Final = -16445
_OVERFLOW: Final = Fraction(2) ** 16384
#: Redis refuses a float argument longer than this (MAX_LONG_DOUBLE_CHARS).
MAX_CHARS: Final = 5 * 1024

# What strtold accepts as a whole, as Redis calls it: no leading space (Redis checks),
# no trailing text; decimal or hexadecimal, "inf"/"infinity", "nan" (refused after).
_DECIMAL: Final = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_HEX: Final = re.compile(
    rb"[+-]?0[xX](?:([0-9a-fA-F]+)\.?([0-9a-fA-F]*)|\.([0-9a-fA-F]+))(?:[pP]([+-]?\d+))?"
)
_INF: Final = re.compile(rb"[+-]?(?:inf|infinity)", re.IGNORECASE)
_NAN: Final = re.compile(rb"[+-]?nan(?:\([0-9A-Za-z_]*\))?", re.IGNORECASE)
#: Decimal exponents past which a value is surely zero or infinite as a long double:
#: parsing "1e999999999" exactly would build a number of a billion digits.
_EXP_BOUND: Final = 20000


class LongDouble:
    """A long double value: exact (a Fraction) when finite, else ``inf`` with its sign."""

    __slots__ = ("exact", "inf")

    def __init__(self, exact: Fraction, inf: int = 0) -> None:
        self.exact = exact
        self.inf = inf  # 1 or -1 for an infinity, 0 for a finite value


def round_extended(x: Fraction) -> Fraction | None:
    """``x`` rounded to the nearest long double (ties to even); None when it overflows."""
    if x == 0:
        return x
    sign = -1 if x < 0 else 1
    a = abs(x)
    # The exponent e with 2**63 <= a / 2**e < 2**64, but never below the subnormals'.
    num, den = a.numerator, a.denominator
    e = num.bit_length() - den.bit_length() - _BITS
    if _scaled(num, den, e + 1) >= 2 ** (_BITS - 1):  # the estimate is one low at most
        e += 1
    e = max(e, _MIN_EXP)
    result = _pow2(e) * round(_scaled_fraction(num, den, e))  # round() ties to even
    if result >= _OVERFLOW:
        return None
    return sign * result


def _pow2(e: int) -> Fraction:
    return Fraction(2**e) if e >= 0 else Fraction(1, 2**-e)


def _scaled_fraction(num: int, den: int, e: int) -> Fraction:
    """(num / den) / 2**e, exactly."""
    return Fraction(num, den << e) if e >= 0 else Fraction(num << -e, den)


def _scaled(num: int, den: int, e: int) -> int:
    """(num / den) / 2**e, rounded down."""
    return num // (den << e) if e >= 0 else (num << -e) // den


def parse(raw: bytes) -> LongDouble:
    """A float as Redis's ``string2ld`` reads it, rounded to a long double; NotFloat if not."""
    if not raw or len(raw) > MAX_CHARS or raw[:1].isspace():
        raise NotFloat
    if _INF.fullmatch(raw):
        return LongDouble(Fraction(0), -1 if raw[:1] == b"-" else 1)
    if _NAN.fullmatch(raw):
        raise NotFloat
    exact = _exact(raw)
    value = round_extended(exact)
    # strtold reports ERANGE for an overflow (refused) and for an underflow to zero
    # (refused too: Redis rejects both); a subnormal result is accepted.
    if value is None or (value == 0 and exact != 0):
        raise NotFloat
    return LongDouble(value)


def _exact(raw: bytes) -> Fraction:
    """The exact value of a decimal or hexadecimal float text; NotFloat when it is neither."""
    hexed = _HEX.fullmatch(raw)
    if hexed is not None:
        whole, frac, only_frac, exp = hexed.groups()
        digits = (whole or b"") + (frac if whole is not None else only_frac)
        places = len(frac) if whole is not None else len(only_frac)
        power = int(exp or b"0")
        if abs(power) > 4 * _EXP_BOUND:
            return Fraction(0) if power < 0 else _OVERFLOW * 2
        value = Fraction(int(digits, 16)) * Fraction(2) ** (power - 4 * places)
        return -value if raw[:1] == b"-" else value
    if _DECIMAL.fullmatch(raw) is None:
        raise NotFloat
    mantissa, _, exponent = raw.lower().partition(b"e")
    power = int(exponent or b"0")
    if abs(power) > _EXP_BOUND:
        digits = mantissa.strip(b"+-.0")
        if not digits:
            return Fraction(0)
        return Fraction(0) if power < 0 else _OVERFLOW * 2
    text = mantissa.lstrip(b"+-")
    whole, _, frac = text.partition(b".")
    digits = _int_of_digits(whole + frac)
    value = Fraction(digits) * Fraction(10) ** (power - len(frac))
    return -value if raw[:1] == b"-" else value


def _int_of_digits(text: bytes) -> int:
    """Decimal digits as an integer, however many: Python's own conversion stops at 4300."""
    value = 0
    for at in range(0, len(text), _CHUNK_DIGITS):
        part = text[at : at + _CHUNK_DIGITS]
        value = value * 10 ** len(part) + int(part)
    return value


def add(a: LongDouble, b: LongDouble) -> LongDouble:
    """``a + b`` as the hardware computes it; FloatOverflow when not finite, as Redis refuses."""
    if a.inf or b.inf:
        raise FloatOverflow
    total = round_extended(a.exact + b.exact)
    if total is None:
        raise FloatOverflow
    return LongDouble(total)


def format_human(value: LongDouble) -> bytes:
    """``%.17Lf`` with trailing zeros (and a bare point) removed, as Redis's ld2string."""
    if value.inf:
        return b"inf" if value.inf > 0 else b"-inf"
    x = value.exact
    scaled = round(abs(x) * 10**17)  # printf rounds the exact binary value, half to even
    whole, frac = divmod(scaled, 10**17)
    text = f"{_digits(whole)}.{frac:017d}".rstrip("0").rstrip(".")
    if x < 0 and text != "0":
        text = "-" + text
    return text.encode()


def _digits(n: int) -> str:
    """A non-negative integer in decimal, however long.

    Python's own conversion stops at 4300 digits; the largest long double has 4933.
    """
    if n < _CHUNK:
        return str(n)
    high, low = divmod(n, _CHUNK)
    return _digits(high) + f"{low:0{_CHUNK_DIGITS}d}"


_CHUNK_DIGITS: Final = 4000
_CHUNK: Final = 10**_CHUNK_DIGITS


def incr(stored: bytes | None, increment: LongDouble, not_float: CommandError) -> bytes:
    """The new text of a float counter: ``stored`` (None: 0) plus ``increment``.

    ``not_float`` is the error for a stored value that does not parse: INCRBYFLOAT and
    HINCRBYFLOAT word it differently.
    """
    current = LongDouble(Fraction(0))
    if stored is not None:
        try:
            current = parse(stored)
        except NotFloat:
            raise not_float from None
    return format_human(add(current, increment))

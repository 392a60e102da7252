"""Memory sizes as Redis writes them in its configuration (``64mb``, ``1gb``, ``100``)."""

from __future__ import annotations

import re
from typing import Final

# Redis's memtoull: a number, optionally with k/m/g (powers of 1000) or kb/mb/gb (1024).
_SIZE: Final = re.compile(r"(\d+)(k|kb|m|mb|g|gb)?", re.IGNORECASE)
_UNITS: Final = {
    "": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}


def parse_size(word: str, setting: str) -> int:
    """Bytes of a size such as ``64mb``; a ValueError naming ``setting`` and the word if not one."""
    match = _SIZE.fullmatch(word.strip())
    if match is None:
        msg = f"{setting}: {word!r} is not a size (bytes, or with k, kb, m, mb, g or gb)"
        raise ValueError(msg)
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]

r"""How LangGraph's names become Stash keys: each part escaped, none reaching another's.

Thread ids, checkpoint namespaces, store namespaces and item keys are any text. A key
is its parts joined by ``:`` after each part is percent-encoded (UTF-8) outside
``A-Z a-z 0-9 _ . - ~``: no part can hold a ``:`` that would shift the others, and none
holds a glob character (``* ? [ ] \``), so ``pattern(*parts)`` lists exactly the keys
under those parts.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote, unquote

#: What separates the parts of a key; never inside an encoded part.
SEP: Final = ":"
#: Characters a part keeps as they are: RFC 3986's unreserved ones, none a glob's.
_SAFE: Final = "_.-~"


def part(text: str) -> str:
    """One name as a key part: percent-encoded outside the unreserved characters."""
    return quote(text, safe=_SAFE)


def unpart(encoded: str) -> str:
    """The name a key part encodes."""
    return unquote(encoded)


def key(*parts: str) -> str:
    """The key of ``parts``, each encoded, joined by ``:``."""
    return SEP.join(part(p) for p in parts)


def split(stored: str) -> list[str]:
    """The names a key made by :func:`key` holds, in order."""
    return [unpart(p) for p in stored.split(SEP)]


def pattern(*parts: str) -> str:
    """A glob matching every key that starts with ``parts`` and has more after them."""
    return key(*parts) + SEP + "*"

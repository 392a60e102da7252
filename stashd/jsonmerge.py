"""RFC 7396 JSON merge patch: how ``UPDATE ... MERGE`` changes part of a stored document."""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:  # noqa: ANN401 - any JSON value
    """Apply ``patch`` to ``target`` as RFC 7396 section 2 defines; inputs are not mutated.

    An object patch merges member by member (``null`` removes a member); any other patch
    replaces the target whole.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result

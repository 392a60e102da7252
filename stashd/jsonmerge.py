"""RFC 7396 JSON merge patch: how ``UPDATE ... MERGE`` changes part of a stored document."""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:  # noqa: ANN401 - any JSON value
    """Apply ``patch`` to ``target`` as RFC 7396 section 2 defines; inputs are not mutated.

    An object patch merges member by member (``null`` removes a member); any other patch
    replaces the target whole. The walk keeps its own stack of objects still to merge
    instead of recursing, so no depth of either document can reach Python's recursion
    limit (the RFC's recursive pseudocode did, on a patch nested near the parser's).
    """
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    todo: list[tuple[dict[str, Any], dict[str, Any]]] = [(merged, patch)]
    while todo:
        result, members = todo.pop()
        for name, value in members.items():
            if value is None:
                result.pop(name, None)
            elif isinstance(value, dict):
                # A copy of the member to merge into (or a new object, as the RFC says
                # for a member that is not one), filled in when its turn comes.
                current = result.get(name)
                inner = dict(current) if isinstance(current, dict) else {}
                result[name] = inner
                todo.append((inner, value))
            else:
                result[name] = value
    return merged

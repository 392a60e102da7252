# The memory store's hot path in C (stashd/_fastpath.c): plain GET and SET in one pass.

from stashd.store.base import Entry

def run(
    data: bytes,
    store: object,  # a MemoryStore: its keyspaces are read and written
    ns: str,
    entry_type: type[Entry],
    now: int,
    ttl_ms: int,
    max_bulk: int,
    max_payload: int,
    max_request: int,
    proto: int,
    out: bytearray,
    /,
) -> int: ...  # bytes consumed * 4 + the last command run (0 none, 1 GET, 2 SET)

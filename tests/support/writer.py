"""A write load for crash tests: prints one line per write stashd acknowledged, then exits.

Run as ``python writer.py PORT THREADS PREFIX``. Each thread has its own connection and
loops: ``SET PREFIX:t:n n`` (line ``set KEY VALUE``), every third step ``STASH`` (line
``stash ID JSON``) and every other step ``INCR PREFIX:counter`` (line ``incr VALUE``).
A line is printed only after its reply arrived, so the lines are exactly the
acknowledged writes. When the server goes away, each thread stops; any other error
reply is printed as ``error ...`` (a crash test expects none). Retries are off: a
retried write could be acknowledged twice or by a different server.
"""

from __future__ import annotations

import json
import sys
import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

_print_lock = threading.Lock()


def say(line: str) -> None:
    """Print one whole line and flush it, so a line is never half-written or held back."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def work(port: int, thread: int, prefix: str) -> None:
    """Write until the server disappears."""
    r = redis.Redis(port=port, retry=Retry(NoBackoff(), 0), socket_timeout=30)
    n = 0
    try:
        while True:
            n += 1
            key = f"{prefix}:{thread}:{n}"
            r.set(key, str(n))
            say(f"set {key} {n}")
            if n % 3 == 0:
                doc = json.dumps({"thread": thread, "n": n}, separators=(",", ":"))
                mid = r.execute_command("STASH", doc).decode()
                say(f"stash {mid} {doc}")
            if n % 2 == 0:
                say(f"incr {r.incr(f'{prefix}:counter')}")
    except (redis.ConnectionError, redis.TimeoutError):
        return
    except redis.RedisError as exc:
        say(f"error {type(exc).__name__}: {exc}")


def main() -> None:
    """Start the threads and wait for all of them."""
    port, threads, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    workers = [threading.Thread(target=work, args=(port, t, prefix)) for t in range(threads)]
    for w in workers:
        w.start()
    say("started")
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()

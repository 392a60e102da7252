"""Suite http: ``wrk -c 50`` against stashd's HTTP sidecar and a bare aiohttp handler.

GET /recall/{id} and POST /stash on the backend named by ``--http-backend``, against a
bare aiohttp handler returning the same JSON bodies (bench/bare_http.py), alternating
anchor and subject for several rounds and taking medians.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon import daemon
from tests.support.servers import free_port, wait_for_port

BENCH = Path(__file__).resolve().parent
HTTP_TARGET = 0.8
HTTP_KEY = "bench-key"  # the same key as bench/http_post.lua, so both tests use one namespace


def wrk(url: str, seconds: int, script: Path | None = None) -> float:
    """Requests per second of one ``wrk -t1 -c50`` run (one thread: the server has the other core)."""
    cmd = ["wrk", "-t1", "-c50", f"-d{seconds}s", "-H", f"X-API-KEY: {HTTP_KEY}"]
    if script is not None:
        cmd += ["-s", str(script)]
    done = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    for line in done.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    msg = f"wrk printed no rate: {done.stdout} {done.stderr}"
    raise RuntimeError(msg)


def _http(method: str, url: str, body: bytes | None = None, key: str = HTTP_KEY) -> bytes:
    req = urllib.request.Request(url, data=body, method=method, headers={"X-API-KEY": key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: bytes = resp.read()
        return data


def http_suite(backend: str, rounds: int, seconds: int) -> list[tuple[str, float, float]]:
    """(test, bare rps, stashd rps) for GET /recall and POST /stash; [] when wrk is missing."""
    if shutil.which("wrk") is None:
        print(
            "skipped suite http: wrk is not on PATH "
            "(install it with `apt-get install -y wrk`, see bench/README.md)"
        )
        return []
    post_body = (BENCH / "http_post.lua").read_text().split("wrk.body = '")[1].split("'")[0]
    results = []
    with daemon("--backend", backend) as subject, tempfile.TemporaryDirectory() as tmp:
        base = subject.http_url
        created = _http("POST", f"{base}/stash", post_body.encode())
        memory_id = created.split(b'"memory_id":"')[1].split(b'"')[0].decode()
        recalled = _http("GET", f"{base}/recall/{memory_id}")
        (Path(tmp) / "recall.json").write_bytes(recalled)
        (Path(tmp) / "created.json").write_bytes(created)
        port = free_port()
        bare = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "bare_http.py"),
                "--port",
                str(port),
                "--recall",
                str(Path(tmp) / "recall.json"),
                "--created",
                str(Path(tmp) / "created.json"),
            ],
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(port, bare)
            anchor = f"http://127.0.0.1:{port}"
            assert _http("GET", f"{anchor}/recall/{memory_id}") == recalled
            for test, path, script in [
                ("GET /recall", f"/recall/{memory_id}", None),
                ("POST /stash", "/stash", BENCH / "http_post.lua"),
            ]:
                a: list[float] = []
                s: list[float] = []
                for _ in range(rounds):
                    a.append(wrk(anchor + path, seconds, script))
                    s.append(wrk(base + path, seconds, script))
                results.append((test, statistics.median(a), statistics.median(s)))
            not_found_timing(base, post_body, rounds, seconds)
        finally:
            bare.terminate()
            bare.wait(10)
    return results


def not_found_timing(base: str, post_body: str, rounds: int, seconds: int) -> None:
    """Print how fast 404s come for a missing id and for another tenant's id (no target).

    The two must not differ beyond noise, or the timing would tell that an id exists.
    """
    other = _http("POST", f"{base}/stash", post_body.encode(), key="bench-other-tenant")
    other_id = other.split(b'"memory_id":"')[1].split(b'"')[0].decode()
    missing: list[float] = []
    foreign: list[float] = []
    for _ in range(rounds):
        missing.append(wrk(f"{base}/recall/neverwas", seconds))
        foreign.append(wrk(f"{base}/recall/{other_id}", seconds))
    m, f = statistics.median(missing), statistics.median(foreign)
    print(f"404 timing: missing id {m:.0f} rps, other tenant's id {f:.0f} rps, ratio {f / m:.2f}")


def print_http(backend: str, results: list[tuple[str, float, float]]) -> int:
    """Print the http table; the number of targets missed."""
    if not results:
        return 0
    print(f"{'suite':8} {'test':12} {'bare rps':>10} {'stashd rps':>11} {'ratio':>6} {'target':>6}")
    misses = 0
    for test, bare, subject in results:
        ratio = subject / bare
        verdict = "PASS" if ratio >= HTTP_TARGET else "MISS"
        misses += ratio < HTTP_TARGET
        print(
            f"{'http/' + backend:8} {test:12} {bare:>10.0f} {subject:>11.0f} {ratio:>6.2f} {HTTP_TARGET:>6.2f} {verdict}"
        )
    return misses

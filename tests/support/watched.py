"""A daemon whose log is checked as it is written, a latency probe beside it, and figures.

:class:`WatchedDaemon` is :class:`~tests.support.servers.StashDaemon` with JSON logs read
by a thread while it runs. A long attack at ``--log-level info`` writes far more than a
pipe holds, and a daemon blocked writing its log would look like a stalled server. Each
line is checked once as it arrives: it must be JSON, and no event may be an error or carry
an exception. :class:`Probe` runs tests/support/probe.py beside the attack.
"""

from __future__ import annotations

import json
import resource
import select
import signal
import subprocess
import sys
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from tests.support.servers import StashDaemon

PROBE: Final = Path(__file__).resolve().parent / "probe.py"
# Problem lines kept for the report, and lines of context kept from the log's end.
KEEP_PROBLEMS: Final = 50
KEEP_TAIL: Final = 200


class WatchedDaemon(StashDaemon):
    """``StashDaemon`` logging JSON, its stderr read and checked line by line as it runs.

    After :meth:`stop`, ``problems`` holds the offending lines (not JSON, a traceback, an
    ``error`` or ``critical`` event, an ``exception`` field), ``events`` counts events by
    name, and ``stderr`` holds the problems and the log's last lines.
    """

    def __init__(
        self,
        *extra: str,
        env: dict[str, str] | None = None,
        log_level: str = "info",
        db: Path | None = None,
    ) -> None:
        super().__init__(*extra, "--log-format", "json", env=env, log_level=log_level, db=db)
        self.problems: list[str] = []
        self.events: Counter[str] = Counter()
        self.lines = 0
        self._tail: deque[str] = deque(maxlen=KEEP_TAIL)
        self._reader: threading.Thread | None = None

    def __enter__(self) -> WatchedDaemon:
        super().__enter__()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._check(raw.decode("utf-8", "replace"))

    def _check(self, line: str) -> None:
        self.lines += 1
        self._tail.append(line)
        problem = "Traceback" in line
        try:
            event = json.loads(line)
        except ValueError:
            problem = True
        else:
            if not isinstance(event, dict):
                problem = True
            else:
                self.events[str(event.get("event"))] += 1
                if event.get("level") in ("error", "critical") or "exception" in event:
                    problem = True
        if problem and len(self.problems) < KEEP_PROBLEMS:
            self.problems.append(line.rstrip("\n"))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon, wait for it and for the end of its log; its exit code."""
        assert self.proc is not None
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.stderr = "".join([*(p + "\n" for p in self.problems), *self._tail])
        self.returncode = self.proc.returncode
        return self.returncode

    def rss_kib(self) -> int:
        """The daemon's resident set size now, in KiB (VmRSS)."""
        return _status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        """The daemon's peak resident set size so far, in KiB (VmHWM)."""
        return _status_kib(self.pid, "VmHWM")


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    msg = f"/proc/{pid}/status has no {field_name}"
    raise RuntimeError(msg)


@dataclass
class Latencies:
    """Round trips (seconds) measured by a probe, and its failures."""

    rtts: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (nearest rank), 0 without samples."""
        if not self.rtts:
            return 0.0
        ordered = sorted(self.rtts)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        """The median round trip."""
        return self.quantile(0.5)

    @property
    def p99(self) -> float:
        """The 99th percentile round trip."""
        return self.quantile(0.99)

    @property
    def worst(self) -> float:
        """The slowest round trip."""
        return max(self.rtts, default=0.0)

    def summary(self) -> str:
        """One line: count, p50, p99 and max in milliseconds."""
        return (
            f"{len(self.rtts)} round trips, p50 {self.p50 * 1000:.1f} ms, "
            f"p99 {self.p99 * 1000:.1f} ms, max {self.worst * 1000:.1f} ms"
        )


class Probe:
    """tests/support/probe.py in a process of its own, timing PING or GET /healthz."""

    def __init__(
        self, door: str, port: int, key: str | None = None, interval: float = 0.01
    ) -> None:
        self.args = [sys.executable, str(PROBE), door, str(port), "--interval", str(interval)]
        if key:
            self.args += ["--key", key]
        self.proc: subprocess.Popen[bytes] | None = None
        self.result: Latencies | None = None

    def __enter__(self) -> Probe:
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.proc.kill()
            _, err = self.proc.communicate()
            msg = f"the probe did not start: {line!r} {err.decode(errors='replace')}"
            raise RuntimeError(msg)
        return self

    def finish(self) -> Latencies:
        """Stop probing; the round trips measured."""
        if self.result is not None:
            return self.result
        assert self.proc is not None
        out, err = self.proc.communicate(input=b"", timeout=60)
        lines = out.decode().strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            msg = f"the probe failed ({self.proc.returncode}): {err.decode(errors='replace')}"
            raise RuntimeError(msg)
        data = json.loads(lines[-1])
        self.result = Latencies(data["rtts"], data["failures"])
        return self.result

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if t is None:
                self.finish()
            else:
                self.proc.kill()
                self.proc.communicate()


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft

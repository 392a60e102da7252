"""Start real redis-server and stashd processes on free ports, and stop them cleanly."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final

import pytest

# Ports for test servers come from below Linux's ephemeral range (32768-60999 by
# default), where the kernel picks the local ports of outgoing connections: a port
# chosen there can be taken by some client's connection before the server binds it.
# Under pytest-xdist each worker takes every n-th port of that range, so two workers never
# choose the same one (a server stopped and started again on its port stays its own).
_WORKER: Final = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_WORKERS: Final = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_PORTS: Final = range(20000 + _WORKER, 32000, _WORKERS)
_handed_out: set[int] = set()
# How often a server whose port was taken meanwhile is started again on new ports.
START_ATTEMPTS: Final = 4


def free_port() -> int:
    """A TCP port nothing listens on right now, not handed out before in this process."""
    for _ in range(200):
        port = random.choice(_PORTS)  # noqa: S311 - spreading ports, not a secret
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _port_taken(error: RuntimeError) -> bool:
    """True when a server failed to start because its port was taken after it was chosen."""
    text = str(error).lower()
    return "address already in use" in text or "address in use" in text


def _wait_until(
    port: int,
    proc: subprocess.Popen[bytes],
    timeout: float,
    ready: Callable[[socket.socket], bool],
    what: str,
) -> None:
    """Poll ``port`` until ``ready`` says so on a fresh connection; fail with the output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            msg = f"server exited with {proc.returncode}: {out}"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if ready(sock):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    msg = f"server on port {port} did not {what} within {timeout} s"
    raise RuntimeError(msg)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on ``port``, or fail with the output."""
    _wait_until(port, proc, timeout, lambda _: True, "accept connections")


def _pings(sock: socket.socket) -> bool:
    sock.sendall(b"*1\r\n$4\r\nPING\r\n")
    return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))


def wait_for_ping(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Block until the server on ``port`` answers PING (NOAUTH counts), or fail with its output."""
    _wait_until(port, proc, timeout, _pings, "answer PING")


class RedisServer:
    """A throwaway redis-server on a free port (never the one on 6379).

    ``stop()`` and ``start()`` take it down and bring it back on the same port, empty,
    as a Redis restart without persistence would.
    """

    def __init__(self, *extra: str) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not on PATH: Redis comparison tests cannot run")
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory()

    @property
    def url(self) -> str:
        """A redis:// URL for this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def dir(self) -> Path:
        """The server's working directory (its files, if any)."""
        return Path(self._dir.name)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert self.binary is not None
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self._dir.name, *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_ping(self.port, self.proc)

    def stop(self) -> None:
        """Stop the server (SIGTERM) and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def flush(self) -> None:
        """FLUSHALL, so a test starts from an empty server."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")

    def __enter__(self) -> RedisServer:
        for attempt in range(START_ATTEMPTS):
            try:
                self.start()
            except RuntimeError as exc:
                if not _port_taken(exc) or attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
            else:
                break
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._dir.cleanup()


class RedisClusterServers:
    """A Redis Cluster of three masters (no replicas) on free ports, made with redis-cli.

    Each node is a ``redis-server --cluster-enabled yes`` in a directory of its own;
    ``redis-cli --cluster create`` assigns the slots, and the cluster is ready once
    every node reports ``cluster_state:ok``.
    """

    def __init__(self, masters: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            pytest.skip("redis-cli is not on PATH: a Redis Cluster cannot be created")
        # The bus port is given explicitly: the default, port + 10000, does not exist
        # for the high ports free_port() tends to return.
        self.nodes = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--cluster-port",
                str(free_port()),
            )
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        """A redis+cluster:// URL naming one node; the client finds the others."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for node in self.nodes:
            node.flush()

    def __enter__(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        try:
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            create = ["redis-cli", "--cluster", "create", *addresses]
            subprocess.run(
                [*create, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._wait_ok()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                info = subprocess.run(
                    ["redis-cli", "-p", str(node.port), "CLUSTER", "INFO"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    msg = f"the cluster did not become ready within {timeout} s: {info}"
                    raise RuntimeError(msg)
                time.sleep(0.1)

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for node in self.nodes:
            node.__exit__(t, e, tb)


class StashDaemon:
    """``python -m stashd`` on free ports (RESP and HTTP), in an empty working directory.

    The HTTP sidecar always gets its own free port (never the default 8000), so daemons
    started by tests stay isolated; pass ``--no-http`` in ``extra`` to turn it off. Its
    SQLite file is ``stash.db`` in a temporary directory unless ``db`` names one (two
    daemons can share a file), so no test ever touches the user's data directory.
    ``fd_limit`` (soft, hard) is the open-file limit the daemon starts with.

    MCP is served only when ``mcp`` is true: loading the SDK costs each daemon half a
    second of CPU in the background, which the suite's many daemons that never speak
    MCP would pay on every start (and tests that measure a daemon would measure).
    With it, the daemon counts as started once the endpoint has loaded.
    """

    def __init__(
        self,
        *extra: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log_level: str = "warning",
        db: Path | None = None,
        fd_limit: tuple[int, int] | None = None,
        log_file: Path | None = None,
        mcp: bool = False,
    ) -> None:
        self.port = free_port()
        # Where the daemon's log goes instead of a pipe (read at stop): a file, as a
        # deployed daemon's would, for runs that log more than a pipe holds unread.
        self.log_file = log_file
        self.fd_limit = fd_limit
        self.http = "--no-http" not in extra
        if self.http and not mcp:
            extra = (*extra, "--no-mcp")
        self.http_port = free_port() if self.http else 0
        self.host = "127.0.0.1"
        self.extra = extra
        self._dir = tempfile.TemporaryDirectory()
        self.db = db or Path(self._dir.name) / "stash.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STASH_")}
        self.env["STASH_DB"] = str(self.db)
        self.env.update(env or {})
        self.cwd = cwd or Path(self._dir.name)
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = ""
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> StashDaemon:
        for attempt in range(START_ATTEMPTS):
            try:
                self._start()
            except RuntimeError as exc:
                if not _port_taken(exc) or attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
                self.http_port = free_port() if self.http else 0
            else:
                break
        return self

    def _start(self) -> None:
        args = [sys.executable, "-m", "stashd", "--host", self.host, "--port", str(self.port)]
        if self.http:
            args += ["--http-port", str(self.http_port)]
        args += ["--log-level", self.log_level, *self.extra]
        fd_limit = self.fd_limit

        def limit_files() -> None:  # runs in the child, before stashd starts
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, fd_limit)

        log = None if self.log_file is None else self.log_file.open("ab")
        self.proc = subprocess.Popen(
            args,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if log is None else log,
            preexec_fn=limit_files if fd_limit is not None else None,  # noqa: PLW1509 - setrlimit only
        )
        if log is not None:
            log.close()  # the daemon has its own descriptor
        wait_for_ping(self.port, self.proc)
        if self.http:
            wait_for_port(self.http_port, self.proc)
            self._wait_for_mcp()

    def _wait_for_mcp(self, timeout: float = 30.0) -> None:
        """Block until the MCP endpoint has loaded (GET /healthz says so): a started daemon.

        It loads in the background after the ports open; tests that measure the daemon
        (its memory, its latency) start from a daemon whose every door is up.
        """
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=10) as answer:  # noqa: S310 - loopback
                state = json.loads(answer.read())["mcp"]
            if state != "starting":
                assert state in ("ready", "off"), f"the MCP endpoint is {state}: {self.stderr}"
                return
            if time.monotonic() > deadline:
                msg = "the MCP endpoint did not load"
                raise RuntimeError(msg)
            time.sleep(0.02)

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP sidecar."""
        return f"http://{self.host}:{self.http_port}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon, wait for it, and return its exit code (once: later calls repeat it)."""
        assert self.proc is not None
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr = "" if err is None else err.decode(errors="replace")
        self.returncode = self.proc.returncode
        return self.proc.returncode

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stopped_by_test = self.returncode is not None
        code = self.stop()
        self._dir.cleanup()
        if t is None and not stopped_by_test:
            assert code == 0, f"stashd exited with {code}: {self.stderr}"


def redis_nodes(url: str, *extra: str, count: int = 2) -> list[StashDaemon]:
    """``count`` daemons on the Redis at ``url`` (not started), as a deployment's nodes."""
    return [StashDaemon("--backend", "redis", "--redis-url", url, *extra) for _ in range(count)]

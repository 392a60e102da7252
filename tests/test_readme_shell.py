"""The README's terminal sessions (```console blocks) run, and print what the README shows.

A session is ``$ command`` lines, each followed by the lines it prints. Its commands run
one after another in one bash process (so ``ID=$(stash stash ...)`` carries over), in an
empty temporary directory that is also ``HOME`` (so the default data file is a fresh
one), with this interpreter's bin directory first on ``PATH`` (``stash``, ``stashd`` are
the installed ones) and no ``STASH_*`` variable set. redis-cli gets ``--no-raw``, so it
prints as on a terminal (``(integer) 600``, quoted strings) though stdout is a pipe. A command's stdout and stderr are
compared together, as a terminal shows them: what the README leaves out must not be
printed at all. Each command must exit 0. Outputs are matched by
tests/support/readme.py, which says what may differ (ids, keys, clocks, TTLs ticking).

A session that uses ``-p 6380`` or ``localhost:8000`` gets a stashd of its own (SQLite,
as ``make run`` starts it) on free ports, written into its commands: each session
expects namespaces as it left them, so sessions do not share one. A ``$ stashd ...``
line starts that daemon itself, in the background, on free ports (added to the line),
and later lines talk to it; its logs are not compared.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.readme import Block, Matcher, blocks
from tests.support.servers import StashDaemon, free_port, wait_for_ping

SESSIONS = [b for b in blocks() if b.info == "console"]
#: A command that has not finished by then has hung; the session is killed.
COMMAND_TIMEOUT_S = 30.0


def steps(block: Block) -> list[tuple[str, str]]:
    """(command, expected output) of each ``$`` line of a session."""
    found: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            assert found, f"README.md:{block.line}: output before the first $ line: {line!r}"
            found[-1][1].append(line)
    return [(command, "".join(f"{o}\n" for o in out)) for command, out in found]


class Shell:
    """One bash process; each command's output is read up to a marker printed after it."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.marker = f"__readme_{uuid.uuid4().hex}__"
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, command: str) -> tuple[str, int]:
        """The command's output (stdout and stderr) and its exit status."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        # stdin is /dev/null, so a command never reads the rest of the script; the newline
        # before } ends a trailing comment.
        self.proc.stdin.write(
            f"{{ {command}\n}} </dev/null 2>&1\nprintf '%s%d\\n' {self.marker} $?\n"
        )
        self.proc.stdin.flush()
        self.watchdog = threading.Timer(COMMAND_TIMEOUT_S, self.proc.kill)
        self.watchdog.start()
        out: list[str] = []
        try:
            while True:
                line = self.proc.stdout.readline()
                assert line, f"bash ended during {command!r}: {''.join(out)}"
                if self.marker in line:
                    before, _, status = line.partition(self.marker)
                    out.append(before)
                    return "".join(out), int(status)
                out.append(line)
        finally:
            self.watchdog.cancel()

    def close(self) -> None:
        """End bash (its stdin closes) and wait for it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def environment(home: Path) -> dict[str, str]:
    """The environment a user's shell would have: installed commands first, no STASH_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASH_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    return env


def uses_default_ports(block: Block) -> bool:
    """True when the session talks to a daemon at the README's ports."""
    return "-p 6380" in block.body or "localhost:8000" in block.body


def test_the_sessions_are_there() -> None:
    """The quick starts and strict mode are written as sessions, so they run."""
    bodies = "\n".join(b.body for b in SESSIONS)
    for command in ("$(stash stash", "$ redis-cli -p 6380 STASH", "$ curl -s", "$ stashd --auth"):
        assert command in bodies


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[tuple[Shell, dict[str, str]]]:
    """A shell in an empty directory, and its environment."""
    env = environment(tmp_path)
    sh = Shell(tmp_path, env)
    try:
        yield sh, env
    finally:
        sh.close()


@pytest.mark.parametrize("block", SESSIONS, ids=[f"README.md:{b.line}" for b in SESSIONS])
def test_the_session_prints_what_the_readme_shows(
    block: Block, shell: tuple[Shell, dict[str, str]], tmp_path: Path
) -> None:
    """Each command runs, exits 0, and prints the README's lines."""
    sh, env = shell
    matcher = Matcher()
    with ExitStack() as stack:
        ports = {"resp": 6380, "http": 8000}
        if uses_default_ports(block) and "$ stashd" not in block.body:
            daemon = stack.enter_context(
                StashDaemon(mcp=True)
            )  # the default daemon, as make run starts it
            ports = {"resp": daemon.port, "http": daemon.http_port}
        started = time.monotonic()
        for command, expected in steps(block):
            real = matcher.fill(command)
            real = real.replace("-p 6380", f"-p {ports['resp']}")
            real = real.replace("localhost:8000", f"localhost:{ports['http']}")
            if real.startswith("redis-cli "):  # as on a terminal: (integer), quotes
                real = real.replace("redis-cli ", "redis-cli --no-raw ", 1)
            if command.startswith("stashd "):
                ports = {"resp": free_port(), "http": free_port()}
                stack.enter_context(background_daemon(real, ports, tmp_path, env))
                assert not expected, f"README.md:{block.line}: a daemon's logs are not shown"
                continue
            out, status = sh.run(real)
            assert status == 0, f"README.md:{block.line}: {command!r} exited {status}:\n{out}"
            matcher.ran_for(time.monotonic() - started)
            problems = matcher.lines(expected, out, command)
            assert not problems, f"README.md:{block.line}: {command}\n" + "\n".join(problems)


class background_daemon:  # noqa: N801 - used as a context manager, like contextlib's
    """The README's ``stashd ...`` line running in the background on ``ports``."""

    def __init__(self, command: str, ports: dict[str, int], cwd: Path, env: dict[str, str]) -> None:
        args = shlex.split(command, comments=True)
        args += ["--port", str(ports["resp"]), "--http-port", str(ports["http"])]
        self.log = (cwd / "stashd.log").open("wb")
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.log, stderr=self.log)
        self.log_path = cwd / "stashd.log"
        self.port = ports["resp"]

    def __enter__(self) -> background_daemon:
        wait_for_ping(self.port, self.proc)
        return self

    def __exit__(self, *_: object) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()
        assert self.proc.returncode == 0, self.log_path.read_text(errors="replace")

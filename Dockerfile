# The stashd image: RESP on 6380, HTTP on 8000, as a non-root user.
#
# Any backend works; many nodes behind a load balancer use --backend redis (see
# docker-compose.yml and the README's "Many nodes on Redis"). The container listens on all
# interfaces, which open mode refuses unless STASH_ALLOW_OPEN=1: run strict mode
# (STASH_AUTH=keys) or allow open mode on a private network.

# -- build: the package and its dependencies as wheels -------------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stashd ./stashd
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- run: only the installed wheels, no compiler, no sources -------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 stash \
 && useradd --system --uid 10001 --gid stash --home-dir /var/lib/stash --create-home stash
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/stash_memory-*.whl \
 && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/stash
ENV STASH_HOST=0.0.0.0 \
    STASH_PORT=6380 \
    STASH_HTTP_PORT=8000 \
    STASH_LOG_FORMAT=json \
    STASH_DB=/var/lib/stash/stash.db \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/stash"]
EXPOSE 6380 8000
# PING over RESP: +PONG, or -NOAUTH in strict mode, proves the daemon answers. It does not
# touch the store, so a Redis outage does not make every node restart at once.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, socket; s = socket.create_connection(('127.0.0.1', int(os.environ.get('STASH_PORT', '6380'))), 2); s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n'); raise SystemExit(0 if s.recv(64).startswith((b'+PONG', b'-NOAUTH')) else 1)"]
ENTRYPOINT ["stashd"]

"""rediss://: TLS to Redis with the server's certificate checked by default, on every path.

A throwaway CA and a server certificate for ``localhost`` are made with ``cryptography``
for each run; redis-server serves TLS on one port beside its plain one. On a
redis-server built without TLS the tests are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stashd.errors import StoreUnavailable
from stashd.redistarget import RedisTarget
from stashd.service import MemoryService
from stashd.store.base import StoreOpenError
from stashd.store.redis.store import RedisStore
from stashd.types import Limits, Principal
from tests.support.resp_client import RespClient
from tests.support.servers import RedisServer, StashDaemon, free_port

pytestmark = pytest.mark.slow

ALICE = Principal("alice", Limits(1000, 60_000, 3_600_000))


def _tls_supported() -> bool:
    """Whether this redis-server knows the tls-port directive (built with BUILD_TLS=yes)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return False
    done = subprocess.run(
        [binary, "--port", "0", "--tls-port", "0"], capture_output=True, text=True, check=False
    )
    return "not listen anywhere" in done.stdout + done.stderr


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _certificates(folder: Path) -> tuple[str, str, str]:
    """A CA, and a key and certificate for DNS:localhost signed by it: (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stash test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        _write(folder / "ca.pem", ca.public_bytes(pem)),
        _write(folder / "redis.pem", cert.public_bytes(pem)),
        _write(folder / "redis.key", key_pem),
    )


class TlsRedis:
    """A redis-server with TLS on ``tls_port`` (and plain TCP on another port, for setup)."""

    def __init__(self, server: RedisServer, tls_port: int, ca: str) -> None:
        self.server = server
        self.tls_port = tls_port
        self.ca = ca

    def url(self, host: str = "localhost", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"rediss://{host}:{self.tls_port}/0" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    if not _tls_supported():
        pytest.skip("redis-server was built without TLS (no tls-port): rediss:// is not tested")
    ca, cert, key = _certificates(tmp_path_factory.mktemp("tls"))
    tls_port = free_port()
    args = ["--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key]
    args += ["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
    with RedisServer(*args) as server:
        yield TlsRedis(server, tls_port, ca)


def test_certificate_files_are_read_when_the_url_is(tmp_path: Path) -> None:
    """A readable CA and key pair parse; a missing or non-PEM file is a ValueError naming it."""
    ca, cert, key = _certificates(tmp_path)
    target = RedisTarget.parse(
        f"rediss://h/0?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}"
    )
    assert (target.ca_certs, target.certfile, target.keyfile) == (ca, cert, key)
    with pytest.raises(ValueError, match=f"ssl_ca_certs {tmp_path}/none.pem: .*No such file"):
        RedisTarget.parse(f"rediss://h/0?ssl_ca_certs={tmp_path}/none.pem")
    with pytest.raises(ValueError, match=f"ssl_certfile/ssl_keyfile {ca}: cannot be read"):
        RedisTarget.parse(f"rediss://h/0?ssl_certfile={ca}")  # a certificate without its key


def test_the_loops_link_speaks_tls_with_the_certificate_checked(tls_redis: TlsRedis) -> None:
    """rediss:// with the CA: the batched path works; the store's rounds go over TLS."""
    store = RedisStore.from_url(tls_redis.url(ssl_ca_certs=tls_redis.ca))
    svc = MemoryService(store)

    async def batched() -> list[object]:
        await store.open()
        try:
            return await store.run_many([svc.set(ALICE, b"k", b"v"), svc.incr(ALICE, b"n", 2)])
        finally:
            await store.close()

    assert asyncio.run(batched()) == [(True, None), 2]
    assert store.run(svc.get(ALICE, b"k")).value == b"v"  # redis-py, over TLS too


def test_certificates_are_checked_unless_turned_off(tls_redis: TlsRedis) -> None:
    """Without the CA, or for another host name, both paths refuse; ssl_cert_reqs=none does not."""
    for url, why in [
        (tls_redis.url(), "certificate verify failed"),
        (tls_redis.url("127.0.0.1", ssl_ca_certs=tls_redis.ca), "certificate verify failed"),
    ]:
        store = RedisStore.from_url(url)
        with pytest.raises(StoreOpenError, match=why):
            asyncio.run(store.open())
        with pytest.raises(StoreUnavailable, match=why):
            store.run(MemoryService(store).get(ALICE, b"k"))
    unchecked = RedisStore.from_url(tls_redis.url("127.0.0.1", ssl_cert_reqs="none"))

    async def lean() -> list[object]:
        await unchecked.open()
        try:
            return await unchecked.run_many([MemoryService(unchecked).incr(ALICE, b"m", 1)])
        finally:
            await unchecked.close()

    assert asyncio.run(lean()) == [1]
    assert unchecked.run(MemoryService(unchecked).incr(ALICE, b"m", 1)) == 2


def test_a_daemon_on_rediss(tls_redis: TlsRedis) -> None:
    """stashd --redis-url rediss://...: clients see nothing of TLS; the data is in Redis."""
    url = tls_redis.url(ssl_ca_certs=tls_redis.ca)
    with StashDaemon("--backend", "redis", "--redis-url", url, "--no-http") as daemon:
        client = RespClient(daemon.port)
        assert client.call("SET", "over", "tls").render() == "+OK"
        assert client.call("GET", "over").render() == "$'tls'"
        client.close()
    plain = RespClient(tls_redis.server.port)
    assert plain.call("EXISTS", "user:{default}:over").render() == ":1"
    plain.close()

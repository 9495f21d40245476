"""A real PostgreSQL 15 for the center's tests: one cluster per test session in a temporary directory
(ivr_central.pgtemp), a fresh database per test. The collector over real HTTPS on loopback with test
certificates (trustme), aiohttp's client as the box."""

from __future__ import annotations

import dataclasses
import itertools
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import trustme

from ivr_central.config import CentralConfig, TlsConfig
from ivr_central.pgtemp import PgTemp
from ivr_central.server import CentralService

_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgTemp]:
    pg = PgTemp(tmp_path_factory.mktemp("pg"))
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture
def pg_dsn(pg_server: PgTemp) -> str:
    """A new, empty database on the session's cluster."""
    return pg_server.create_db(f"t{next(_db_names)}")


@dataclass
class Pki:
    """The center's CA and certificate files, and a client context that trusts it."""

    ca: trustme.CA
    cert: Path
    key: Path
    ca_file: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def tls(self, client_ca: Path | None = None) -> TlsConfig:
        return TlsConfig(self.cert, self.key, client_ca)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = d / "cert.pem", d / "key.pem", d / "ca.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, cert, key, ca_file)


def collector_config(dsn: str, pki: Pki | None, **kw: object) -> CentralConfig:
    base = CentralConfig(host="127.0.0.1", port=0, dsn=dsn, tls=pki.tls() if pki else None,
                         shutdown_seconds=10.0)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def collector(pg_dsn: str, pki: Pki) -> AsyncIterator[CentralService]:
    """The collector in this test's loop, HTTPS on 127.0.0.1, migrated and ready."""
    service = CentralService(collector_config(pg_dsn, pki))
    await service.start()
    try:
        await service.wait_ready()
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def pg(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own to the collector's database, to look at what was written."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()

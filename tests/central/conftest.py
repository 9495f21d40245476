"""A real PostgreSQL 15 for the center's tests: one cluster per test session in a temporary directory
(ivr_central.pgtemp), a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from ivr_central.pgtemp import PgTemp

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

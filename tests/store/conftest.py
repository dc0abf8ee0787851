from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tapescan.store.base import Store
from tapescan.store.duck import DuckDbStore
from tapescan.store.postgres import PostgresStore
from tests.services import postgres_url, scratch_schema


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated store of each backend (PostgreSQL: a schema of its own)."""
    if request.param == "duckdb":
        duck = DuckDbStore(tmp_path / "store.duckdb")
        duck.migrate()
        yield duck
        duck.close()
        return
    url = postgres_url()
    with scratch_schema(url) as schema:
        pg = PostgresStore(url, schema)
        pg.migrate()
        yield pg
        pg.close()

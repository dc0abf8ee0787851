"""Real services of the test machine: PostgreSQL and Redis on 127.0.0.1.

A test that needs one skips with the reason when it is not running, unless
TAPESCAN_REQUIRE_SERVICES=1 (as in CI), where a missing service fails the run instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

POSTGRES_URL = os.environ.get(
    "TAPESCAN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def require(service: str, reason: str) -> None:
    if os.environ.get("TAPESCAN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{service} is required (TAPESCAN_REQUIRE_SERVICES=1) but {reason}")
    pytest.skip(f"{service} not available: {reason}")


def postgres_url() -> str:
    """The test PostgreSQL URL, after checking that the server answers."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        require("PostgreSQL at 127.0.0.1:5432", str(error).strip().splitlines()[0])
    return POSTGRES_URL


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    """A schema that exists only for one test, dropped after it."""
    name = unique_name("tapescan_test")
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )

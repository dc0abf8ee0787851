"""The store a process uses, built from its settings and migrated to the latest schema."""

from __future__ import annotations

from tapescan.config import Settings
from tapescan.store.base import Store, StoreError
from tapescan.store.duck import DuckDbStore

DUCKDB_FILE = "tapescan.duckdb"


def open_store(settings: Settings) -> Store:
    """The configured store, migrated; raises StoreError with what to fix."""
    store: Store
    if settings.store == "duckdb":
        store = DuckDbStore(settings.data_dir / DUCKDB_FILE, settings.duckdb_memory_mb)
    else:
        from tapescan.store.postgres import PostgresStore  # noqa: PLC0415 - only when used

        url = settings.postgres_url.get_secret_value() if settings.postgres_url else ""
        if not url:
            raise StoreError(
                "store 'postgres' needs TAPESCAN_POSTGRES_URL, e.g. "
                "postgresql://user:password@127.0.0.1:5432/tapescan"
            )
        store = PostgresStore(url, settings.postgres_schema)
    try:
        store.migrate()
    except Exception:
        store.close()
        raise
    return store

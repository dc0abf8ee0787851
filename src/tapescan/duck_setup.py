"""Settings every DuckDB connection of tapescan's gets, whatever it is for.

DuckDB allocates through its own allocator, which keeps memory a finished query freed for the
next one until that query's peak passes ``allocator_flush_threshold`` (128 MiB by default). In a
process whose whole budget is 300 MB that cache is the difference between a store that writes in
16 MB and one that holds 30 MB more after each batch: a first start at 19:30 ET (15.5 hours of
bars caught up and recorded) peaked at 280-302 MB with the default, 278-282 MB with 4 MB, with
no measurable cost in the time the catch-up takes (docs/memory.md).
"""

from __future__ import annotations

from typing import Any

ALLOCATOR_FLUSH_THRESHOLD = "4MB"


def duckdb_config(memory_limit: str, **more: str | bool) -> dict[str, Any]:
    """A connection's config: its memory limit, the allocator's flush threshold, ``more``."""
    return {
        "memory_limit": memory_limit,
        "allocator_flush_threshold": ALLOCATOR_FLUSH_THRESHOLD,
        **more,
    }

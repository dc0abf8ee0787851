"""Retention: sessions older than a table's hot window move to the Parquet archive.

For every session-keyed table with a retention setting, the K most recent sessions present in
the store stay hot (K = the setting named by ``TableSpec.retention``); each older session is
exported, written to the archive (atomically, verified) and only then dropped from the store.
A failed archive write leaves the session hot and is reported; the next run tries again.

Running it again is safe. A session whose archive file already holds exactly the hot rows is
not rewritten, only dropped (a crash between the write and the drop). A session that shows up
hot again after it was archived (late rows from the recorder's spill, a backfill) is merged
with its archive file by key, and the file is rewritten only when the merge changed it: for
``REPLACE_TABLES`` the hot row wins (last write wins, as in the store), otherwise the archived
row wins (first write wins, as PostgreSQL's ``ON CONFLICT DO NOTHING``).

Daily bars and symbols have no retention and are never retired.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tapescan.store.archive import Archive, ArchiveError
from tapescan.store.base import REPLACE_TABLES, Store
from tapescan.store.tables import SESSION_TABLES, TableSpec

log = logging.getLogger(__name__)


class RetentionSettings(Protocol):
    """The settings retention reads (``tapescan.config.Settings`` has them)."""

    @property
    def retention_minute_sessions(self) -> int: ...
    @property
    def retention_event_sessions(self) -> int: ...
    @property
    def retention_slot_sessions(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RetiredSession:
    session: dt.date
    rows: int  # rows in the archive file afterwards
    hot_rows: int  # rows that were hot and are now dropped from the store
    written: bool  # False: the archive already held exactly these rows
    merged: bool  # the session was archived before and came back hot


@dataclass(frozen=True, slots=True)
class RetentionFailure:
    table: str
    session: dt.date
    message: str


@dataclass(frozen=True, slots=True)
class TableRetention:
    table: str
    keep: int
    kept: tuple[dt.date, ...]
    retired: tuple[RetiredSession, ...]

    @property
    def archived(self) -> tuple[dt.date, ...]:
        """Sessions whose archive file was written by this run."""
        return tuple(r.session for r in self.retired if r.written)

    @property
    def dropped(self) -> tuple[dt.date, ...]:
        return tuple(r.session for r in self.retired)

    @property
    def rows(self) -> int:
        """Hot rows moved out of the store."""
        return sum(r.hot_rows for r in self.retired)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    tables: tuple[TableRetention, ...]
    failures: tuple[RetentionFailure, ...]
    hot_bytes_before: dict[str, int] = field(default_factory=dict)
    hot_bytes_after: dict[str, int] = field(default_factory=dict)
    archive_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self, name: str) -> TableRetention:
        return next(t for t in self.tables if t.table == name)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (dates as ISO strings)."""
        return {
            "ok": self.ok,
            "tables": [
                {
                    "table": t.table,
                    "keep": t.keep,
                    "kept": [s.isoformat() for s in t.kept],
                    "archived": [s.isoformat() for s in t.archived],
                    "dropped": [s.isoformat() for s in t.dropped],
                    "rows": t.rows,
                    "sessions": [
                        {
                            "session": r.session.isoformat(),
                            "rows": r.rows,
                            "hot_rows": r.hot_rows,
                            "written": r.written,
                            "merged": r.merged,
                        }
                        for r in t.retired
                    ],
                }
                for t in self.tables
            ],
            "failures": [
                {"table": f.table, "session": f.session.isoformat(), "message": f.message}
                for f in self.failures
            ],
            "hot_bytes_before": self.hot_bytes_before,
            "hot_bytes_after": self.hot_bytes_after,
            "archive_bytes": self.archive_bytes,
        }


@dataclass(frozen=True, slots=True)
class RetentionStep:
    """Progress: ``done`` of ``total`` sessions handled; ``session`` None before the first."""

    table: str
    session: dt.date | None
    done: int
    total: int


def retire(
    store: Store,
    archive: Archive,
    settings: RetentionSettings,
    on_step: Callable[[RetentionStep], None] | None = None,
) -> RetentionReport:
    """Archive and drop every session beyond each table's hot window; see the module doc."""
    before = store.table_bytes()
    plan: list[tuple[TableSpec, int, list[dt.date], list[dt.date]]] = []
    for spec in SESSION_TABLES:
        assert spec.retention is not None
        keep = int(getattr(settings, spec.retention))
        if keep < 1:
            raise ValueError(f"{spec.retention} must keep at least one session, not {keep}")
        hot = store.sessions(spec.name)
        old, kept = hot[: max(0, len(hot) - keep)], hot[max(0, len(hot) - keep) :]
        plan.append((spec, keep, kept, old))
    total = sum(len(old) for *_, old in plan)
    done = 0
    if on_step is not None:
        on_step(RetentionStep(plan[0][0].name if plan else "", None, done, total))
    tables: list[TableRetention] = []
    failures: list[RetentionFailure] = []
    for spec, keep, kept, old in plan:
        retired: list[RetiredSession] = []
        for session in old:
            try:
                retired.append(_retire_session(store, archive, spec, session))
            except (ArchiveError, ValueError) as error:
                log.error("retention: %s %s stays hot: %s", spec.name, session, error)
                failures.append(RetentionFailure(spec.name, session, str(error)))
            done += 1
            if on_step is not None:
                on_step(RetentionStep(spec.name, session, done, total))
        tables.append(TableRetention(spec.name, keep, tuple(kept), tuple(retired)))
    return RetentionReport(
        tables=tuple(tables),
        failures=tuple(failures),
        hot_bytes_before=before,
        hot_bytes_after=store.table_bytes(),
        archive_bytes=archive.table_bytes(),
    )


def _retire_session(
    store: Store, archive: Archive, spec: TableSpec, session: dt.date
) -> RetiredSession:
    hot = store.export_session(spec.name, session)
    merged = archive.rows(spec.name, session) is not None
    if merged:
        archived = archive.read_session(spec.name, session)
        content = merge_by_key(spec, archived, hot, hot_wins=spec.name in REPLACE_TABLES)
        written = not content.equals(archived)
    else:
        content, written = hot, True
    if written:
        archive.write(spec.name, session, content)  # raises ArchiveError: the session stays hot
    still_hot = _session_rows(store, spec, session)
    if still_hot != hot.num_rows:
        raise ArchiveError(
            f"{still_hot - hot.num_rows:+d} rows were written to {spec.name} {session} while it "
            "was being archived; it stays hot until the next run"
        )
    store.drop_session(spec.name, session)
    log.info(
        "retention: %s %s archived (%d rows%s) and dropped",
        spec.name,
        session,
        content.num_rows,
        ", merged" if merged else "",
    )
    return RetiredSession(session, content.num_rows, hot.num_rows, written, merged)


def _session_rows(store: Store, spec: TableSpec, session: dt.date) -> int:
    found = store.read(
        f"SELECT count(*) AS n FROM {spec.name} WHERE {spec.session_column} = %s",
        [session],
        pa.schema([("n", pa.int64())]),
    )
    return int(found.column("n")[0].as_py())


def merge_by_key(spec: TableSpec, archived: pa.Table, hot: pa.Table, hot_wins: bool) -> pa.Table:
    """Archived and hot rows together, one row per key (the winner's), in key order."""
    if hot.num_rows == 0:
        return archived
    source = "_source"
    rank_hot, rank_archived = (0, 1) if hot_wins else (1, 0)
    both = pa.concat_tables(
        [
            archived.append_column(
                source, pa.array([rank_archived] * archived.num_rows, pa.int8())
            ),
            hot.append_column(source, pa.array([rank_hot] * hot.num_rows, pa.int8())),
        ]
    )
    ordered = both.sort_by([*((c, "ascending") for c in spec.key), (source, "ascending")])
    if ordered.num_rows == 0:
        return ordered.drop_columns([source])
    first = pa.array([True])
    changed: pa.Array | None = None
    for column in spec.key:
        values = ordered.column(column).combine_chunks()
        differs = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1))
        changed = differs if changed is None else pc.or_(changed, differs)
    assert changed is not None
    keep = pa.concat_arrays([first, changed])
    return ordered.filter(keep).drop_columns([source])

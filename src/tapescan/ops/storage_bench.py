"""``tapescan bench storage``: bytes a simulated session takes hot in each backend and archived.

One session is recorded exactly as a live run records it (simulated market with per-second
aggregates, a scan cycle per simulated second on the market-time grid, minute bars, scan events
with keyframes, daily bars and slot volume at the end) and written into a fresh DuckDB file and
a scratch PostgreSQL schema. Then the same rows, re-labelled to the following sessions, are
written again with retention after each session, to show that the hot size stays bounded.

Rows go to the stores in batches while the day is simulated (a writer thread, bounded queue)
and to a local Parquet copy that the re-labelled sessions are read back from, batch by batch, so
memory does not grow with the day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tapescan.config import Settings
from tapescan.feeds.sim.feed import SimFeed
from tapescan.feeds.sim.generator import SimMarket
from tapescan.market.calendar import MarketCalendar, et_to_ns
from tapescan.market.clock import FastClock
from tapescan.model import AggregateBatch, AggregateKind, FeedEvent
from tapescan.ops.bench import machine
from tapescan.ops.memory import release_free_memory
from tapescan.scan.grid import CycleGrid
from tapescan.scan.library import builtin_scans
from tapescan.scan.scanner import Scanner, text_columns
from tapescan.state.market_state import MarketState, SessionSummary
from tapescan.store.archive import Archive
from tapescan.store.base import Store
from tapescan.store.duck import DuckDbStore
from tapescan.store.keyframes import KeyframeSchedule
from tapescan.store.postgres import PostgresStore
from tapescan.store.records import ScanEventRows, daily_bar_rows, minute_bar_rows, slot_volume_rows
from tapescan.store.retention import RetentionSettings, retire
from tapescan.store.tables import SESSION_TABLES, SYMBOLS, TABLES, conform

Message = Callable[[str], None]
NS_PER_SECOND = 1_000_000_000
MB = 1_000_000
TARGET_ARCHIVE_MB = 60.0
BOUNDED_WITHIN = 0.10
BATCH_ROWS = 100_000  # rows per store write
EVENT_BATCH = 20_000  # scan events + entries per store write
PENDING_WRITES = 4  # batches queued for the writer thread before the simulation waits
RELABEL_BATCH = 250_000
RECORDED = ("minute_bars", "scan_events", "scan_entries", "daily_bars", "slot_volume")
BENCH_DUCKDB_MEMORY_MB = 1024
COMPACT_TABLES = ("minute_bars", "scan_events")  # archived in compact layouts when exact


def default_postgres_url() -> str:
    import os  # noqa: PLC0415

    return os.environ.get("TAPESCAN_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"


def mb(value: float) -> float:
    return round(value / MB, 1)


# ---------------------------------------------------------------------- progress


class _Bar:
    """A rich progress bar on stderr (or nothing), advanced in simulated seconds or sessions."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: float) -> int:
        if self._progress is None:
            return 0
        return int(self._progress.add_task(description, total=total, detail=""))

    def update(self, task: int, completed: float, detail: str) -> None:
        if self._progress is not None:
            self._progress.update(task, completed=completed, detail=detail)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- writing


@dataclass
class _Writer:
    """Writes batches to both stores and to the local Parquet copy, on one thread, in order."""

    stores: tuple[Store, ...]
    source_dir: Path
    rows: dict[str, int] = field(default_factory=dict)
    _files: dict[str, pq.ParquetWriter] = field(default_factory=dict)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "bench-write"))
    _pending: deque[Future[None]] = field(default_factory=deque)

    def put(self, name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        while len(self._pending) >= PENDING_WRITES:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, name, table))

    def _write(self, name: str, table: pa.Table) -> None:
        table = conform(TABLES[name], table)
        for store in self.stores:
            store.write(name, table)
        if name in RECORDED:
            if name not in self._files:
                self._files[name] = pq.ParquetWriter(
                    self.source_dir / f"{name}.parquet", TABLES[name].schema, compression="lz4"
                )
            self._files[name].write_table(table)
            self.rows[name] = self.rows.get(name, 0) + table.num_rows

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()
        for writer in self._files.values():
            writer.close()
        self._files.clear()


# ---------------------------------------------------------------------- one session


@dataclass
class _Recording:
    """The live pipeline of node.py, minus the server: state, scans, grid cycles, rows."""

    state: MarketState
    scanner: Scanner
    calendar: MarketCalendar
    writer: _Writer
    symbols: pa.Array
    grid: CycleGrid
    schedule: KeyframeSchedule
    events: ScanEventRows = field(default_factory=ScanEventRows)
    minute_rows: list[pa.Table] = field(default_factory=list)
    pending_minute_rows: int = 0
    cycles: int = 0
    deltas: int = 0

    def cycles_before(self, ts_ns: int) -> None:
        """node.Node._cycles_before: every grid cycle before ``ts_ns``."""
        for at in self.grid.before(ts_ns):
            self.state.advance_to(at)
            output = self.scanner.cycle()
            self.cycles += 1
            self.deltas += len(output.deltas)
            self._record_cycle(output.asof_ns, output.deltas)

    def _record_cycle(self, asof_ns: int, deltas: Any) -> None:
        """node.Node._record_cycle: deltas, and keyframes when the schedule says so."""
        session = self.state.times.date
        keyframes = self.schedule.due(asof_ns, session, self.scanner.trackers)
        self.events.add(session, deltas, keyframes)
        if len(self.events) >= EVENT_BATCH:
            self.flush_events()

    def apply(self, event: FeedEvent) -> None:
        """node.Node._apply: state, and the rows of every minute batch it applied as minute
        bars (corrections replacing the bars they correct)."""
        if not isinstance(event, AggregateBatch):
            self.state.apply_event(event)
            return
        applied = self.state.upsert(event)
        if event.kind is AggregateKind.MINUTE:
            keep = applied.applied
            if keep.any():
                session = self.state.times.date
                rows = minute_bar_rows(event, keep, session, self.symbols, applied.corrected)
                self.minute_rows.append(rows)
                self.pending_minute_rows += rows.num_rows
                if self.pending_minute_rows >= BATCH_ROWS:
                    self.flush_minutes()

    def flush_minutes(self) -> None:
        if self.minute_rows:
            self.writer.put("minute_bars", pa.concat_tables(self.minute_rows))
        self.minute_rows, self.pending_minute_rows = [], 0

    def flush_events(self) -> None:
        for name, table in self.events.take():
            self.writer.put(name, table)

    def session_ended(self, summary: SessionSummary) -> None:
        """node.Node._session_ended: the day's daily bars and slot-volume profile."""
        self.writer.put("daily_bars", daily_bar_rows(summary, self.symbols))
        self.writer.put(
            "slot_volume",
            slot_volume_rows(summary.date, self.state.universe, summary.slot_volume),
        )


def _record_session(
    symbols: int,
    seed: int,
    day: dt.date,
    start_ns: int,
    end_ns: int,
    calendar: MarketCalendar,
    settings: Settings,
    writer: _Writer,
    bar: _Bar,
    message: Message,
) -> dict[str, Any]:
    market = SimMarket(seed, symbols, calendar)
    feed = SimFeed(market, second_aggregates=settings.sim_second_aggregates)
    reference = feed.reference()
    state = MarketState(market.universe, calendar, day)
    state.load_reference(reference)
    present = [c for c in SYMBOLS.columns if c in reference.column_names]
    writer.put("symbols", conform(SYMBOLS, reference.select(present)))
    message("warm-up: simulating the history before the session (not stored)")
    state.load_warmup(feed.warmup(day))
    release_free_memory()
    scanner = Scanner(state, builtin_scans(), text_columns(market.universe, reference))
    recording = _Recording(
        state=state,
        scanner=scanner,
        calendar=calendar,
        writer=writer,
        symbols=pa.array(market.universe.symbols, pa.string()),
        grid=CycleGrid(calendar, NS_PER_SECOND, start_ns),
        schedule=KeyframeSchedule(int(settings.keyframe_minutes * 60e9)),
    )
    task = bar.task("simulating", (end_ns - start_ns) / NS_PER_SECOND)
    began = time.monotonic()
    report_every = 30 * 60 * NS_PER_SECOND
    next_report = start_ns + report_every

    def detail() -> str:
        return (
            f"{_et(state.now_ns)} ET, {recording.cycles:,} cycles, {recording.deltas:,} deltas, "
            f"{writer.rows.get('minute_bars', 0):,} minute bars"
        )

    async def drive() -> None:
        nonlocal next_report
        async for event in feed.events(FastClock(start_ns), start_ns, end_ns):
            recording.cycles_before(event.ts_event_ns)
            recording.apply(event)
            if state.now_ns >= next_report:
                message(f"{detail()} ({time.monotonic() - began:.0f} s)")
                next_report += report_every
            bar.update(task, max(0, state.now_ns - start_ns) / NS_PER_SECOND, detail())
        recording.cycles_before(state.now_ns + 1)

    message(f"simulating {_et(start_ns)}-{_et(end_ns)} ET, one scan cycle per simulated second")
    asyncio.run(drive())
    recording.flush_minutes()
    recording.flush_events()
    recording.session_ended(state.summary())
    writer.close()
    bar.update(task, (end_ns - start_ns) / NS_PER_SECOND, detail())
    return {
        "scans": len(scanner.trackers),
        "cycles": recording.cycles,
        "deltas": recording.deltas,
        "keyframes": recording.schedule.recorded,
        "seconds": round(time.monotonic() - began, 1),
    }


def _et(ts_ns: int) -> str:
    from tapescan.market.calendar import ns_to_et  # noqa: PLC0415

    return ns_to_et(ts_ns).strftime("%H:%M:%S")


# ---------------------------------------------------------------------- measuring


def _duck_hot(duck: DuckDbStore) -> dict[str, Any]:
    """File size and used blocks after a checkpoint; per table, the blocks its segments use."""
    duck.checkpoint()
    sizes = duck.table_bytes()
    con = duck._con  # a size probe the store contract does not offer
    size_row = con.execute("SELECT block_size FROM pragma_database_size()").fetchall()
    block_size = int(size_row[0][0])
    tables: dict[str, int] = {}
    for name in TABLES:
        found = con.execute(
            "SELECT count(DISTINCT b) FROM ("
            f" SELECT block_id AS b FROM pragma_storage_info('{name}') WHERE block_id >= 0"
            f" UNION ALL SELECT unnest(additional_block_ids) FROM pragma_storage_info('{name}'))"
        ).fetchall()
        tables[name] = int(found[0][0]) * block_size
    return {
        "file_bytes": sizes["file"],
        "used_bytes": sizes["total"],
        "tables_block_bytes": tables,
    }


def _pg_hot(pg: PostgresStore) -> dict[str, Any]:
    sizes = pg.table_bytes()
    total = sizes.pop("total")
    return {"used_bytes": total, "tables_bytes": sizes}


def _counts(store: Store) -> dict[str, int]:
    return {name: store.count(name) for name in TABLES}


def _duplicate_keys(duck: DuckDbStore) -> dict[str, int]:
    """Rows beyond the first of their key in DuckDB (which has no key constraints; PostgreSQL
    keeps the first and ignores the rest)."""
    found: dict[str, int] = {}
    for spec in TABLES.values():
        key = ", ".join(spec.key)
        table = duck.read(
            f"SELECT coalesce(sum(n - 1), 0) AS n FROM "
            f"(SELECT count(*) AS n FROM {spec.name} GROUP BY {key})",
            [],
            pa.schema([("n", pa.int64())]),
        )
        found[spec.name] = int(table.column("n")[0].as_py())
    return found


def _hot_total(duck: DuckDbStore, pg: PostgresStore) -> dict[str, int]:
    duck_hot = _duck_hot(duck)
    return {
        "duckdb_file_bytes": duck_hot["file_bytes"],
        "duckdb_used_bytes": duck_hot["used_bytes"],
        "postgres_bytes": _pg_hot(pg)["used_bytes"],
    }


def _archive_session(
    duck: DuckDbStore, day: dt.date, root: Path, zstd_level: int, message: Message
) -> dict[str, Any]:
    """Bytes of each retiring table's archive of ``day``, and of the compact tables' plain
    layout for comparison (both at ``zstd_level``)."""
    archive = Archive(root / "archive", zstd_level)
    plain = Archive(root / "plain", zstd_level, compact=False)
    seconds: dict[str, float] = {}
    layouts: dict[str, str | None] = {}
    try:
        for spec in SESSION_TABLES:
            message(f"archiving {spec.name} (zstd {zstd_level})")
            rows = duck.export_session(spec.name, day)
            began = time.monotonic()
            archive.write(spec.name, day, rows)
            seconds[spec.name] = round(time.monotonic() - began, 1)
            layouts[spec.name] = archive.layout(spec.name, day)
            if spec.name in COMPACT_TABLES:
                message(f"archiving {spec.name} in the plain layout, for comparison")
                plain.write(spec.name, day, rows)
            del rows
        archived, plain_archived = archive.table_bytes(), plain.table_bytes()
        tables = {name: archived[name] for name in layouts}
        plain_tables = {name: plain_archived[name] for name in COMPACT_TABLES}
    finally:
        archive.close()
        plain.close()
    total = sum(tables.values())
    plain_total = total - sum(tables[n] for n in plain_tables) + sum(plain_tables.values())
    return {
        "zstd_level": zstd_level,
        "layouts": layouts,
        "tables_bytes": tables,
        "tables_mb": {name: mb(v) for name, v in tables.items()},
        "total_bytes": total,
        "total_mb": mb(total),
        "plain_layout": {
            "tables_bytes": plain_tables,
            "tables_mb": {name: mb(v) for name, v in plain_tables.items()},
            "total_bytes": plain_total,
            "total_mb": mb(plain_total),
        },
        "write_seconds": seconds,
    }


# ---------------------------------------------------------------------- re-labelled sessions


def _relabelled(
    source: Path, name: str, day: dt.date, session: dt.date, shift_ns: int
) -> Iterator[pa.Table]:
    """The recorded rows of ``name``, in batches, as rows of ``session`` (times shifted)."""
    spec = TABLES[name]
    column = spec.session_column
    assert column is not None
    path = source / f"{name}.parquet"
    if not path.exists():
        return
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=RELABEL_BATCH):
        table = pa.Table.from_batches([batch], schema=spec.schema)
        index = table.schema.get_field_index(column)
        table = table.set_column(
            index, column, pa.array(np.full(table.num_rows, session), pa.date32())
        )
        if "ts" in table.column_names:
            shifted = pc.add(table.column("ts"), pa.scalar(shift_ns // 1000, pa.duration("us")))
            table = table.set_column(table.schema.get_field_index("ts"), "ts", shifted)
        if "asof_ns" in table.column_names:
            shifted = pc.add(table.column("asof_ns"), pa.scalar(shift_ns, pa.int64()))
            table = table.set_column(table.schema.get_field_index("asof_ns"), "asof_ns", shifted)
        yield table


def _bounded(
    duck: DuckDbStore,
    pg: PostgresStore,
    source: Path,
    day: dt.date,
    sessions: int,
    calendar: MarketCalendar,
    retention: RetentionSettings,
    zstd_level: int,
    archive_root: Path,
    bar: _Bar,
    message: Message,
) -> dict[str, Any]:
    """Session 1 is the recorded one; sessions 2.. are its rows re-labelled; retire after each."""
    archives = {
        "duckdb": Archive(archive_root / "duckdb", zstd_level),
        "postgres": Archive(archive_root / "postgres", zstd_level),
    }
    stores: dict[str, Store] = {"duckdb": duck, "postgres": pg}
    middle = max(1, sessions // 2)
    history: list[dict[str, Any]] = []
    task = bar.task("sessions", sessions)
    dates = [day]
    while len(dates) < sessions:
        dates.append(calendar.next_session(dates[-1]))
    try:
        for number, session in enumerate(dates, start=1):
            began = time.monotonic()
            if number > 1:
                message(f"session {number}/{sessions}: {session} (re-labelled rows)")
                shift = calendar.session(session).pre_open_ns - calendar.session(day).pre_open_ns
                for name in RECORDED:
                    for table in _relabelled(source, name, day, session, shift):
                        for store in stores.values():
                            store.write(name, table)
            written = time.monotonic()
            retired: dict[str, Any] = {}
            for backend, store in stores.items():
                report = retire(store, archives[backend], retention)
                if not report.ok:
                    raise RuntimeError(f"retention failed in {backend}: {report.failures}")
                retired[backend] = {
                    t.table: [s.isoformat() for s in t.dropped] for t in report.tables
                }
            hot = _hot_total(duck, pg)
            history.append(
                {
                    "session": number,
                    "date": session.isoformat(),
                    "hot": hot,
                    "hot_mb": {key: mb(value) for key, value in hot.items()},
                    "retired": retired["postgres"],
                    "write_seconds": round(written - began, 1),
                    "retention_seconds": round(time.monotonic() - written, 1),
                }
            )
            message(
                f"session {number}/{sessions} {session}: hot DuckDB {mb(hot['duckdb_used_bytes'])}"
                f" MB used ({mb(hot['duckdb_file_bytes'])} MB file), PostgreSQL "
                f"{mb(hot['postgres_bytes'])} MB"
            )
            bar.update(task, number, f"{session}")
        archived = {backend: archive.table_bytes() for backend, archive in archives.items()}
    finally:
        for archive in archives.values():
            archive.close()
    at_middle, at_end = history[middle - 1]["hot"], history[-1]["hot"]
    ratio = {key: round(at_end[key] / at_middle[key], 4) for key in at_end if at_middle[key]}
    checked = ("duckdb_used_bytes", "postgres_bytes")
    return {
        "sessions": sessions,
        "dates": [d.isoformat() for d in dates],
        "retention": {
            spec.name: int(getattr(retention, spec.retention or "")) for spec in SESSION_TABLES
        },
        "after_each_session": history,
        "compared": [middle, sessions],
        "hot_after_middle": at_middle,
        "hot_after_last": at_end,
        "hot_mb_after_middle": {key: mb(value) for key, value in at_middle.items()},
        "hot_mb_after_last": {key: mb(value) for key, value in at_end.items()},
        "ratio_last_to_middle": ratio,
        "within_10_percent": {
            key: abs(ratio[key] - 1) <= BOUNDED_WITHIN for key in checked if key in ratio
        },
        "archive_bytes_after_last": archived,
    }


# ---------------------------------------------------------------------- the benchmark


@contextmanager
def _scratch(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="tapescan-storage-bench-") as name:
        yield Path(name)


def bench_storage(
    symbols: int,
    seed: int,
    day: dt.date,
    calendar: MarketCalendar,
    postgres_url: str,
    sessions: int,
    message: Message,
    *,
    start: dt.time = dt.time(4, 0),
    end: dt.time | None = None,
    settings: Settings | None = None,
    show_bar: bool = True,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Hot bytes per backend and table, archived bytes, and hot size over ``sessions``."""
    settings = settings or Settings()
    times = calendar.session(day)
    start_ns = et_to_ns(day, start)
    end_ns = et_to_ns(day, end) if end is not None else times.post_close_ns
    if not times.pre_open_ns <= start_ns < end_ns <= times.post_close_ns:
        raise ValueError("the window must lie within the session's 04:00-20:00 ET")
    began = time.monotonic()
    schema = f"tapescan_bench_{uuid.uuid4().hex[:12]}"
    with _scratch(workdir) as scratch, _Bar(show_bar) as bar:
        # A measuring store, not the running process's: its duplicate-key group-bys over the
        # day need more than the run's 16 MB buffer pool (duckdb_memory_mb).
        duck = DuckDbStore(scratch / "store.duckdb", BENCH_DUCKDB_MEMORY_MB)
        pg = PostgresStore(postgres_url, schema)
        try:
            duck.migrate()
            pg.migrate()
            source = scratch / "source"
            source.mkdir(exist_ok=True)
            writer = _Writer((duck, pg), source)
            try:
                recorded = _record_session(
                    symbols, seed, day, start_ns, end_ns, calendar, settings, writer, bar, message
                )
            finally:
                writer.close()
            message("measuring hot sizes")
            duck_hot = _duck_hot(duck)
            pg_hot = _pg_hot(pg)
            rows = {"duckdb": _counts(duck), "postgres": _counts(pg)}
            duplicates = _duplicate_keys(duck)
            archived_at = time.monotonic()
            archive = _archive_session(
                duck, day, scratch / "archive-one", settings.archive_zstd_level, message
            )
            archive_seconds = time.monotonic() - archived_at
            bounded_at = time.monotonic()
            bounded = (
                _bounded(
                    duck,
                    pg,
                    source,
                    day,
                    sessions,
                    calendar,
                    settings,
                    settings.archive_zstd_level,
                    scratch / "archive",
                    bar,
                    message,
                )
                if sessions > 1
                else None
            )
            bounded_seconds = time.monotonic() - bounded_at
        finally:
            duck.close()
            try:
                pg.drop_schema()
            finally:
                pg.close()
    archived_mb = archive["total_mb"]
    return {
        "benchmark": "storage",
        "machine": machine(),
        "inputs": {
            "symbols": symbols,
            "seed": seed,
            "session": day.isoformat(),
            "window_et": [start.isoformat(), (end or dt.time(20, 0)).isoformat()],
            "sessions": sessions,
            "feed": "simulated, per-second aggregates"
            if settings.sim_second_aggregates
            else "simulated, minute aggregates",
            "cycle": "one scan cycle per simulated second (market-time grid)",
            "keyframe_minutes": settings.keyframe_minutes,
            "archive_zstd_level": settings.archive_zstd_level,
            "postgres": {"schema": schema, "dropped": True},
            "not_stored": "warm-up history (40 sessions of daily bars, 10 of slot volume)",
        },
        "recording": recorded,
        "rows": rows,
        "duckdb_duplicate_keys": duplicates,
        "hot_one_session": {
            "duckdb": {
                **duck_hot,
                "file_mb": mb(duck_hot["file_bytes"]),
                "used_mb": mb(duck_hot["used_bytes"]),
                "tables_block_mb": {k: mb(v) for k, v in duck_hot["tables_block_bytes"].items()},
            },
            "postgres": {
                **pg_hot,
                "used_mb": mb(pg_hot["used_bytes"]),
                "tables_mb": {k: mb(v) for k, v in pg_hot["tables_bytes"].items()},
            },
        },
        "archive_one_session": archive,
        "bounded": bounded,
        "target": {
            "archive_mb_per_session_under": TARGET_ARCHIVE_MB,
            "archive_mb_per_session": archived_mb,
            "archive_met": archived_mb < TARGET_ARCHIVE_MB,
            # None: one session only, boundedness not measured
            "hot_within_10_percent_after_middle_vs_last": all(bounded["within_10_percent"].values())
            if bounded is not None
            else None,
        },
        "seconds": {
            "record": recorded["seconds"],
            "archive": round(archive_seconds, 1),
            "sessions": round(bounded_seconds, 1),
            "total": round(time.monotonic() - began, 1),
        },
    }

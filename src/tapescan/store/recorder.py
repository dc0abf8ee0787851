"""The recorder: a bounded batch writer from the live pipeline to the store.

Producers (the event loop) only append to an in-memory queue and never block; one that can
wait (a catch-up) may ask ``wait_for_room`` first. A writer thread takes everything queued,
groups it by table and writes each table in bulk statements (COPY or DuckDB's Arrow insert) of
at most ``write_rows`` rows each. When the store is down, rows stay queued up to
``queue_rows``; beyond that the writer moves them to Parquet files in the spill directory.
When the store answers again, spilled files are written back oldest first, then the queue; a
file is deleted only after its rows are committed. Write-back goes in passes of about
``flush_s``: between passes the queue is taken in, and spilled again behind the remaining files
when it outgrows ``queue_rows``, so a long write-back does not grow memory either. A process
that stops while the store is down spills what it holds, and the next start writes those files
back.

A watchdog interrupts a store call that hangs past ``write_timeout_s`` (a frozen server keeps
its connections open), so the writer is never held for longer than that and spilling stays
possible.

Worst case memory: ``queue_rows`` x ~100 B (a minute bar in Arrow form) plus one batch being
encoded, plus what producers queue during one ``write_timeout_s`` (in 30 s: ~6,000 minute bars
and 30 cycles of deltas, a few MB).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tapescan.scan.delta import Delta, Snapshot
from tapescan.store.base import Store, StoreError, StoreUnavailableError
from tapescan.store.failure import ErrorLog, ErrorRecord
from tapescan.store.records import ScanEventRows
from tapescan.store.tables import TABLES

log = logging.getLogger(__name__)
RETRY_S = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class RecorderLimits:
    queue_rows: int = 100_000
    flush_s: float = 1.0
    spill_max_bytes: int = 10 * 1024**3
    write_timeout_s: float = 30.0
    write_rows: int = 25_000  # most rows in one store write: a catch-up's burst goes in several


@dataclass(slots=True)
class RecorderStats:
    queued_rows: int = 0
    written_rows: int = 0
    spilled_rows: int = 0
    spill_files: int = 0
    spill_bytes: int = 0
    restored_rows: int = 0
    lost_rows: int = 0
    interrupted_writes: int = 0
    writes: int = 0
    last_write_ms: float = 0.0
    store_up: bool = True
    failures: int = 0  # failed store calls, spills and recorder errors, all counted
    last_error: str = ""  # what fails right now; empty once writes go through again
    last_error_at: str | None = None  # since when (UTC, ISO 8601)
    recent_errors: tuple[ErrorRecord, ...] = ()  # the last distinct causes, newest first


_Item = tuple[str, pa.Table] | tuple[dt.date, Sequence[Delta], Sequence[Snapshot]]
_Queued = tuple[_Item, int]  # with its row count


def split_rows(tables: list[pa.Table], rows: int) -> tuple[list[pa.Table], list[pa.Table]]:
    """The first ``rows`` rows of ``tables`` (whole tables, then a slice) and the rest."""
    taken: list[pa.Table] = []
    count = 0
    for index, table in enumerate(tables):
        room = rows - count
        if table.num_rows <= room:
            taken.append(table)
            count += table.num_rows
            continue
        if room > 0:
            taken.append(table.slice(0, room))
            return taken, [table.slice(room), *tables[index + 1 :]]
        return taken, tables[index:]
    return taken, []


class Recorder:
    def __init__(
        self,
        store: Store,
        spill_dir: Path,
        limits: RecorderLimits | None = None,
        on_write: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.store = store
        self.spill_dir = spill_dir
        self.limits = limits or RecorderLimits()
        self.stats = RecorderStats()
        self._on_write = on_write
        self._queue: deque[_Queued] = deque()
        self._queued_rows = 0
        self._pending_count = 0  # rows taken by the writer and not yet written (under _cond)
        self._cond = threading.Condition()
        self._stopping = False
        self._flush_requested = 0
        self._flushed = 0
        self._events = ScanEventRows()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._done = threading.Event()
        self._busy_since: float | None = None  # the writer is inside a store call since then
        self._spill_seq = 0
        self._restoring = False  # store up and spill files left: no waiting between passes
        self._pending: dict[str, list[pa.Table]] = {}  # taken from the queue, not yet written
        self._retry = 0  # index into RETRY_S
        self._next_try = 0.0  # next reconnect while the store is down (monotonic)
        self._next_spill = 0.0  # next spill attempt after one failed (a full disk)
        self._errors = ErrorLog(log)
        self._dropping = 0  # rows dropped since the store or the spill last took rows
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.spill_dir.glob("*.tmp"):  # a spill cut short: never complete
            leftover.unlink()
        existing = self._spill_files()
        if existing:
            self._spill_seq = int(existing[-1].name.split("-", 1)[0]) + 1
            self.stats.spill_files = len(existing)
            self.stats.spill_bytes = sum(p.stat().st_size for p in existing)

    # ------------------------------------------------------------------ producers

    def put(self, name: str, table: pa.Table) -> None:
        """Queue rows for table ``name``; never blocks."""
        if table.num_rows == 0:
            return
        with self._cond:
            self._queue.append(((name, table), table.num_rows))
            self._queued_rows += table.num_rows
            self.stats.queued_rows = self._queued_rows
            self._cond.notify()

    def scan_cycle(
        self, session: dt.date, deltas: Sequence[Delta], keyframes: Sequence[Snapshot] = ()
    ) -> None:
        """Queue one cycle's deltas (and keyframes taken after it); never blocks."""
        if not deltas and not keyframes:
            return
        with self._cond:
            rows = len(deltas) + len(keyframes)
            self._queue.append(((session, tuple(deltas), tuple(keyframes)), rows))
            self._queued_rows += rows
            self.stats.queued_rows = self._queued_rows
            self._cond.notify()

    def backlog_rows(self) -> int:
        """Rows queued or taken by the writer and not yet written."""
        with self._cond:
            return self._queued_rows + self._pending_count

    def wait_for_room(self, rows: int, timeout_s: float) -> bool:
        """Block until at most ``rows`` rows wait for the store, or until waiting cannot help;
        False on timeout (ask again).

        For a producer that can wait, such as a catch-up that would otherwise queue hours of
        bars faster than the store takes them. While the store is down or spilled files are
        being written back, nobody waits: rows queue and spill behind them as usual.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    self._stopping
                    or not self.stats.store_up
                    or self._restoring
                    or self._queued_rows + self._pending_count <= rows
                ),
                timeout_s,
            )

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="recorder-watchdog", daemon=True)
        self._watchdog.start()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued before this call is committed (False on timeout)."""
        with self._cond:
            self._flush_requested += 1
            ticket = self._flush_requested
            self._cond.notify()
            return self._cond.wait_for(lambda: self._flushed >= ticket, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what can be written within ``timeout_s``; spill the rest to disk."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive() and self._busy_since is not None:
                # held by a hung store: break the call off so what is queued still spills
                self.store.interrupt()
                self._thread.join(timeout_s)

    # ------------------------------------------------------------------ writer thread

    def _take(self) -> tuple[list[_Queued], int]:
        with self._cond:
            deadline = time.monotonic() + self.limits.flush_s
            # A pending flush cuts the wait short only while the store can take the rows: with
            # the store down the flush waits for it like everything else (no busy loop).
            while (
                not self._stopping
                and not self._restoring
                and (self._flush_requested == self._flushed or not self.stats.store_up)
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._queued_rows >= self.limits.queue_rows // 4:
                    break
                self._cond.wait(remaining)
            items = list(self._queue)
            self._queue.clear()
            self._pending_count += self._queued_rows
            self._queued_rows = 0
            ticket = self._flush_requested
            return items, ticket

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._write_loop()
                    return
                except Exception as error:  # a bug: count it, keep the thread, start over
                    self._errors.failed("recorder", error)
                    self._publish_errors()
                    with self._cond:  # no hot loop on a bug that repeats
                        if self._cond.wait_for(lambda: self._stopping, RETRY_S[-1]):
                            return
        finally:
            self._done.set()

    def _watch(self) -> None:
        """Interrupt a store call that hangs past ``write_timeout_s``.

        Without this a database that stops answering without closing its connections (a frozen
        server, a dead network path) would hold the writer forever, and the queue would grow
        without bound because only the writer spills it. Interrupted, the call fails like any
        outage: rows stay queued, then spill, and are written back later.
        """
        timeout = self.limits.write_timeout_s
        interrupted: float | None = None
        while not self._done.wait(min(1.0, timeout / 4)):
            since = self._busy_since
            if since is None or since == interrupted or time.monotonic() - since < timeout:
                continue
            interrupted = since
            self.stats.interrupted_writes += 1
            log.warning("store call hung for %.0f s; interrupting it", time.monotonic() - since)
            try:
                self.store.interrupt()
            except Exception:  # the watchdog must outlive a failing interrupt
                log.exception("interrupting the store failed")

    def _write_loop(self) -> None:
        pending = self._pending
        while True:
            items, ticket = self._take()
            grouped = self._group(pending, items)
            stopping = self._stopping
            wrote = self._write(pending)  # the store took rows (maybe not all yet)
            spilled = False
            if pending and (stopping or self._pending_rows(pending) > self.limits.queue_rows):
                spilled = self._spill(pending, retry_now=stopping)
            if pending and (stopping or self._pending_rows(pending) > self.limits.queue_rows):
                # neither the store nor the spill directory took them: keep what the queue
                # holds (the newest rows), drop the oldest; at stop nothing can be kept
                self._drop_oldest(pending, 0 if stopping else self.limits.queue_rows)
            if spilled or (wrote and not pending):
                self._errors.cleared("spill")
            if (spilled or wrote) and self._dropping:
                log.warning("rows are kept again; %d were dropped meanwhile", self._dropping)
                self._dropping = 0
            if wrote:
                self._errors.cleared("store")
            if grouped:
                self._errors.cleared("recorder")
            self._publish_errors()
            with self._cond:
                self._pending_count = self._pending_rows(pending)
                self.stats.queued_rows = self._queued_rows + self._pending_count
                if not pending and self.stats.store_up and not self._spill_files():
                    self._flushed = ticket
                self._cond.notify_all()
                if stopping and not self._queue:
                    return

    def _group(self, pending: dict[str, list[pa.Table]], items: list[_Queued]) -> bool:
        """Queued items into ``pending`` by table; an item that cannot be encoded is lost."""
        ok = True
        for item, rows in items:
            try:
                if len(item) == 2:
                    name, table = item
                    pending.setdefault(name, []).append(table)
                else:
                    session, deltas, keyframes = item
                    self._events.add(session, deltas, keyframes)
                    # entries and events keep their order with the other tables' rows
                    for event_name, event_rows in self._events.take():
                        pending.setdefault(event_name, []).append(event_rows)
            except Exception as error:  # a bug in encoding: these rows cannot be written
                self.stats.lost_rows += rows
                self._errors.failed("recorder", error)
                ok = False
        return ok

    def _write(self, pending: dict[str, list[pa.Table]]) -> bool:
        """Reconnect when due, then write spilled files and ``pending``; False if one failed.

        A long write-back goes in passes: spill files may be left, then ``pending`` waits.
        """
        if not self.stats.store_up and time.monotonic() >= self._next_try:
            try:
                self._busy_since = time.monotonic()
                self.store.reconnect()
                self.stats.store_up = True
            except Exception as error:  # still down; anything else must not end the thread
                self._errors.failed("store", error)
                self._retry = min(self._retry + 1, len(RETRY_S) - 1)
                self._next_try = time.monotonic() + RETRY_S[self._retry]
            finally:
                self._busy_since = None
        if not self.stats.store_up:
            return False
        self._busy_since = time.monotonic()
        try:
            # pending rows are newer than the spill files: written only after them
            if self._restore_spilled(time.monotonic() + self.limits.flush_s):
                self._write_pending(pending)
            self._retry = 0
            return True
        except Exception as error:  # down, a full disk, a bug or bad rows: keep them, retry
            self._errors.failed("store", error)
            self.stats.store_up = False
            down = isinstance(error, StoreUnavailableError)
            self._retry = 0 if down else len(RETRY_S) - 1
            self._next_try = time.monotonic() + RETRY_S[self._retry]
            return False
        finally:
            self._busy_since = None

    @staticmethod
    def _pending_rows(pending: dict[str, list[pa.Table]]) -> int:
        return sum(t.num_rows for tables in pending.values() for t in tables)

    def _publish_errors(self) -> None:
        """Copy the error log into ``stats`` (read by health from other threads)."""
        self.stats.failures = self._errors.failures
        self.stats.last_error = self._errors.current
        self.stats.last_error_at = self._errors.current_since
        self.stats.recent_errors = self._errors.history

    def _write_pending(self, pending: dict[str, list[pa.Table]]) -> None:
        """Write ``pending`` in batches of at most ``write_rows`` rows, oldest first.

        A burst (a catch-up queues minutes of bars faster than the store takes them) never goes
        in one transaction: one concatenated copy of it, and the store's own copy while it
        inserts, would both be as large as the burst. A failed batch leaves itself and the rest
        in ``pending``; the batches before it are written.
        """
        for name in list(pending):
            tables = pending[name]
            while tables:
                batch, rest = split_rows(tables, self.limits.write_rows)
                table = batch[0] if len(batch) == 1 else pa.concat_tables(batch)
                del batch
                began = time.perf_counter()
                self.store.write(name, table)
                elapsed = time.perf_counter() - began
                pending[name] = tables = rest
                with self._cond:  # a producer waiting for room may go on
                    self._pending_count = max(0, self._pending_count - table.num_rows)
                    self._cond.notify_all()
                self.stats.written_rows += table.num_rows
                self.stats.writes += 1
                self.stats.last_write_ms = elapsed * 1000
                if self._on_write is not None:
                    self._on_write(name, table.num_rows, elapsed)
                del table
            del pending[name]

    def _drop_oldest(self, pending: dict[str, list[pa.Table]], keep_rows: int) -> None:
        """Drop the oldest rows of the fullest tables until ``keep_rows`` are left; counted."""
        excess = self._pending_rows(pending) - keep_rows
        if excess <= 0:
            return
        dropped: dict[str, int] = {}
        while excess > 0:
            name = max(pending, key=lambda n: sum(t.num_rows for t in pending[n]))
            tables = pending[name]
            oldest = tables[0]
            if oldest.num_rows <= excess:
                tables.pop(0)
                if not tables:
                    del pending[name]
                count = oldest.num_rows
            else:
                tables[0] = oldest.slice(excess)
                count = excess
            excess -= count
            dropped[name] = dropped.get(name, 0) + count
        if not self._dropping:  # once, not every pass: the count is in lost_rows
            log.error(
                "neither the store nor the spill directory takes rows: dropping the oldest "
                "beyond recorder_queue_rows (%d) until one does (first: %s)",
                keep_rows,
                ", ".join(f"{rows} {name}" for name, rows in dropped.items()),
            )
        self._dropping += sum(dropped.values())
        self.stats.lost_rows += sum(dropped.values())

    # ------------------------------------------------------------------ spill

    def _spill_files(self) -> list[Path]:
        return sorted(self.spill_dir.glob("*.parquet"))

    def _spill(self, pending: dict[str, list[pa.Table]], retry_now: bool = False) -> bool:
        """Move ``pending`` to Parquet files; True when it all went. A full disk keeps them."""
        if time.monotonic() < self._next_spill and not retry_now:
            return False
        for name in list(pending):
            table = pa.concat_tables(pending[name])
            pending[name] = [table]
            if self.stats.spill_bytes >= self.limits.spill_max_bytes:
                self._spill_failed(
                    StoreError(
                        f"spill directory full: {self.stats.spill_bytes:,} bytes "
                        f"(recorder_spill_max_bytes {self.limits.spill_max_bytes:,})"
                    )
                )
                return False
            path = self.spill_dir / f"{self._spill_seq:012d}-{name}.parquet"
            temporary = path.with_suffix(".tmp")
            try:
                pq.write_table(table, temporary, compression="zstd")
                temporary.rename(path)
            except Exception as error:  # a full disk above all; rows stay pending
                temporary.unlink(missing_ok=True)
                self._spill_failed(error)
                return False
            del pending[name]
            self._spill_seq += 1
            self.stats.spilled_rows += table.num_rows
            self.stats.spill_files += 1
            self.stats.spill_bytes += path.stat().st_size
        return True

    def _spill_failed(self, error: BaseException) -> None:
        self._errors.failed("spill", error)
        self._next_spill = time.monotonic() + RETRY_S[-1]  # not every pass on a full disk

    def _restore_spilled(self, deadline: float) -> bool:
        """Write spilled files back, oldest first, until ``deadline``; True when none is left."""
        self._restoring = False
        files = self._spill_files()
        for done, path in enumerate(files):
            if time.monotonic() >= deadline and done > 0:
                self._restoring = True
                return False
            name = path.stem.split("-", 1)[-1]
            try:
                if name not in TABLES:
                    raise StoreError(f"spill file {path.name} names no table")
                table = pq.read_table(path)
            except (OSError, pa.ArrowException, StoreError) as error:
                if isinstance(error, OSError) and error.errno is not None:
                    raise  # the disk, not the file: try again later
                self._set_aside(path, error)
                continue
            size = path.stat().st_size
            self.store.write(name, table)
            path.unlink()
            self.stats.restored_rows += table.num_rows
            self.stats.written_rows += table.num_rows
            self.stats.spill_files -= 1
            self.stats.spill_bytes -= size
        return True

    def _set_aside(self, path: Path, error: BaseException) -> None:
        """A spill file that cannot be read is renamed ``.bad`` (kept for a person to look at)."""
        self._errors.failed("spill", error)
        size = path.stat().st_size
        path.rename(path.with_suffix(".bad"))
        self.stats.spill_files -= 1
        self.stats.spill_bytes -= size

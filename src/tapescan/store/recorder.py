"""The recorder: a bounded batch writer from the live pipeline to the store.

Producers (the event loop) only append to an in-memory queue and never wait. A writer thread
takes everything queued, groups it by table and writes each table in one bulk statement (COPY
or DuckDB's Arrow insert). When the store is down, rows stay queued up to ``queue_rows``; beyond
that the writer moves them to Parquet files in the spill directory. When the store answers
again, spilled files are written back oldest first, then the queue; a file is deleted only after
its rows are committed. Write-back goes in passes of about ``flush_s``: between passes the queue
is taken in, and spilled again behind the remaining files when it outgrows ``queue_rows``, so a
long write-back does not grow memory either. A process that stops while the store is down
spills what it holds, and the next start writes those files back.

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
from tapescan.store.base import Store, StoreUnavailableError
from tapescan.store.records import ScanEventRows

log = logging.getLogger(__name__)
RETRY_S = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class RecorderLimits:
    queue_rows: int = 400_000
    flush_s: float = 1.0
    spill_max_bytes: int = 10 * 1024**3
    write_timeout_s: float = 30.0


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
    last_error: str = ""


_Item = tuple[str, pa.Table] | tuple[dt.date, Sequence[Delta], Sequence[Snapshot]]
_Queued = tuple[_Item, int]  # with its row count


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
        self.spill_dir.mkdir(parents=True, exist_ok=True)
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

    def _take(self) -> tuple[list[_Item], int]:
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
            items = [item for item, _ in self._queue]
            self._queue.clear()
            self._queued_rows = 0
            ticket = self._flush_requested
            return items, ticket

    def _run(self) -> None:
        try:
            self._write_loop()
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
        pending: dict[str, list[pa.Table]] = {}
        retry = 0
        next_try = 0.0
        while True:
            items, ticket = self._take()
            for item in items:
                if len(item) == 2:
                    name, table = item
                    pending.setdefault(name, []).append(table)
                else:
                    session, deltas, keyframes = item
                    self._events.add(session, deltas, keyframes)
                    # entries and events keep their order with the other tables' rows
                    for event_name, rows in self._events.take():
                        pending.setdefault(event_name, []).append(rows)
            stopping = self._stopping
            if not self.stats.store_up and time.monotonic() >= next_try:
                try:
                    self._busy_since = time.monotonic()
                    self.store.reconnect()
                    self.stats.store_up, retry = True, 0
                    log.info("store is back; writing back spilled rows")
                except Exception as error:  # still down; anything else must not end the thread
                    if not isinstance(error, StoreUnavailableError):
                        log.exception("store reconnect failed; trying again")
                    self.stats.last_error = str(error)
                    retry = min(retry + 1, len(RETRY_S) - 1)
                    next_try = time.monotonic() + RETRY_S[retry]
                finally:
                    self._busy_since = None
            if self.stats.store_up:
                self._busy_since = time.monotonic()
                try:
                    # pending rows are newer than the spill files: written only after them
                    if self._restore_spilled(time.monotonic() + self.limits.flush_s):
                        self._write_pending(pending)
                except StoreUnavailableError as error:
                    self._went_down(error)
                    next_try = time.monotonic() + RETRY_S[0]
                except Exception as error:  # a bug or bad rows: keep them (spill) and retry
                    log.exception("store write failed; rows kept for a retry")
                    self._went_down(StoreUnavailableError(f"write failed: {error}"))
                    next_try = time.monotonic() + RETRY_S[-1]
                finally:
                    self._busy_since = None
            if pending and (stopping or self._pending_rows(pending) > self.limits.queue_rows):
                self._spill(pending)
            with self._cond:
                self.stats.queued_rows = self._queued_rows + self._pending_rows(pending)
                if not pending and self.stats.store_up and not self._spill_files():
                    self._flushed = ticket
                self._cond.notify_all()
                if stopping and not self._queue:
                    return

    @staticmethod
    def _pending_rows(pending: dict[str, list[pa.Table]]) -> int:
        return sum(t.num_rows for tables in pending.values() for t in tables)

    def _went_down(self, error: StoreUnavailableError) -> None:
        if self.stats.store_up:
            log.warning("store unavailable, queueing then spilling rows: %s", error)
        self.stats.store_up = False
        self.stats.last_error = str(error)

    def _write_pending(self, pending: dict[str, list[pa.Table]]) -> None:
        for name in list(pending):
            table = pa.concat_tables(pending[name])
            began = time.perf_counter()
            self.store.write(name, table)
            elapsed = time.perf_counter() - began
            del pending[name]
            self.stats.written_rows += table.num_rows
            self.stats.writes += 1
            self.stats.last_write_ms = elapsed * 1000
            if self._on_write is not None:
                self._on_write(name, table.num_rows, elapsed)

    # ------------------------------------------------------------------ spill

    def _spill_files(self) -> list[Path]:
        return sorted(self.spill_dir.glob("*.parquet"))

    def _spill(self, pending: dict[str, list[pa.Table]]) -> None:
        for name in list(pending):
            table = pa.concat_tables(pending.pop(name))
            if self.stats.spill_bytes >= self.limits.spill_max_bytes:
                self.stats.lost_rows += table.num_rows
                log.error(
                    "spill directory full (%d bytes): %d %s rows dropped",
                    self.stats.spill_bytes,
                    table.num_rows,
                    name,
                )
                continue
            path = self.spill_dir / f"{self._spill_seq:012d}-{name}.parquet"
            self._spill_seq += 1
            temporary = path.with_suffix(".tmp")
            pq.write_table(table, temporary, compression="zstd")
            temporary.rename(path)
            self.stats.spilled_rows += table.num_rows
            self.stats.spill_files += 1
            self.stats.spill_bytes += path.stat().st_size

    def _restore_spilled(self, deadline: float) -> bool:
        """Write spilled files back, oldest first, until ``deadline``; True when none is left."""
        self._restoring = False
        files = self._spill_files()
        for done, path in enumerate(files):
            if time.monotonic() >= deadline and done > 0:
                self._restoring = True
                return False
            name = path.stem.split("-", 1)[1]
            table = pq.read_table(path)
            size = path.stat().st_size
            self.store.write(name, table)
            path.unlink()
            self.stats.restored_rows += table.num_rows
            self.stats.written_rows += table.num_rows
            self.stats.spill_files -= 1
            self.stats.spill_bytes -= size
        return True

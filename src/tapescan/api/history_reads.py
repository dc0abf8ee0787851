"""History reads off the event loop, bounded in number and in time.

A read runs on one of ``history_max_reads`` threads of its own (a hung database cannot take the
event loop's default threads, which warm-up and shutdown use). A read that has not answered
within ``history_timeout_s`` (waiting for a thread included) answers 503 ``history_timeout``; its
thread is left to finish, and keeps its slot until it does, so hung reads cannot pile up. A store
that is down answers 503 ``store_unavailable``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb

from tapescan.api.errors import ApiError
from tapescan.store.base import StoreError

T = TypeVar("T")


class HistoryReads:
    def __init__(self, timeout_s: float, max_reads: int) -> None:
        self.timeout_s = timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(max_reads, "history-read")
        self._slots: asyncio.Semaphore | None = None
        self._max_reads = max_reads
        self.timed_out = 0

    async def run(self, read: Callable[..., T], *args: object) -> T:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_reads)
        slots = self._slots
        deadline = time.monotonic() + self.timeout_s
        try:
            async with asyncio.timeout(self.timeout_s):
                await slots.acquire()
        except TimeoutError:
            raise self._timeout() from None
        future = asyncio.get_running_loop().run_in_executor(self._pool, read, *args)
        future.add_done_callback(lambda _: slots.release())
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), max(deadline - time.monotonic(), 0.001)
            )
        except TimeoutError:
            future.add_done_callback(_consume)
            raise self._timeout() from None
        except (StoreError, duckdb.Error, OSError) as error:
            raise ApiError(
                503,
                "store_unavailable",
                f"history cannot be read right now: {str(error)[:200]}; the live scans still "
                "work, try again later",
            ) from None

    def _timeout(self) -> ApiError:
        self.timed_out += 1
        return ApiError(
            503,
            "history_timeout",
            f"the history read did not finish within {self.timeout_s:g} s "
            "(history_timeout_s); try a smaller range or later",
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _consume(future: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        future.exception()  # a late failure is not "never retrieved"

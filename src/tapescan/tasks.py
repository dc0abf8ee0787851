"""Named, tracked asyncio tasks that are cancelled with a timeout at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class FatalError(Exception):
    """A failure that ends the process and whose message says it all (no traceback logged)."""

    exit_code = 1


class TaskGroup:
    """Owns a process's long-lived tasks: logs the failure of any, stops them all on request."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None

    def start(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            trace = None if isinstance(error, FatalError) else error
            log.error("task %s failed: %s", task.get_name(), error, exc_info=trace)
            self.failure = self.failure or error
            self.failed.set()

    @property
    def names(self) -> list[str]:
        return sorted(task.get_name() for task in self._tasks)

    async def stop(self, timeout_s: float) -> list[str]:
        """Cancel every task; return the names of those still running after ``timeout_s``."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        return sorted(task.get_name() for task in pending)

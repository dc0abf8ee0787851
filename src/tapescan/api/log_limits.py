"""A log that cannot flood: the same line at most a few times per window, then a count."""

from __future__ import annotations

import logging
import threading
import time

LOG_REPEATS = 5  # the same warning at most this often per window (module constants, no setting)
LOG_WINDOW_S = 10.0


class RepeatFilter(logging.Filter):
    """Lets the same message (logger and format string) through ``LOG_REPEATS`` times per
    ``LOG_WINDOW_S`` (below WARNING, e.g. the access log, 20 times as often); the rest are
    counted, and the first line let through after the window says how many were dropped."""

    def __init__(self, repeats: int = LOG_REPEATS, window_s: float = LOG_WINDOW_S) -> None:
        super().__init__()
        self.repeats, self.window_s = repeats, window_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()  # the recorder's thread logs too

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            return self._filter(record)

    def _filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        started, count = self._seen.get(key, (now, 0))
        if now - started >= self.window_s:
            allowed = self.repeats if record.levelno >= logging.WARNING else self.repeats * 20
            if count > allowed:
                record.msg = f"{record.msg} (and {count - allowed} more like it suppressed)"
            started, count = now, 0
        self._seen[key] = (started, count + 1)
        if len(self._seen) > 1_000:  # bounded: forget the oldest windows
            for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                del self._seen[old]
        allowed = self.repeats if record.levelno >= logging.WARNING else self.repeats * 20
        return count < allowed

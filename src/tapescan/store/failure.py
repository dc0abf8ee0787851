"""What went wrong, said once: the root cause of a store or disk error, and a log of failures.

A database often reports a disk error through a later one: DuckDB's failed COMMIT ("Could not
write file ...: No space left on device") is followed by a failed ROLLBACK ("cannot rollback - no
transaction is active"), and the second is what propagates. ``root_cause`` walks the exception
chain for an ``OSError`` with an errno, or a message carrying one of the system's error texts,
so health reports the disk, not the rollback.

``ErrorLog`` keeps the errors active right now (one per place: ``store``, ``spill``, ...), counts
every failure, writes each distinct cause to the log once per episode (a disk that stays full
does not log every retry), and keeps the last few causes with their counts as history once they
clear.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
from dataclasses import dataclass

from tapescan.store.base import StoreError

# System errors a store or spill write meets on a sick machine; found by text in messages of
# libraries that do not keep the OSError (DuckDB).
_SYSTEM_ERRORS = tuple(
    os.strerror(code)
    for code in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EIO,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
        errno.EACCES,
    )
)
_DIGITS = re.compile(r"\d+")
HISTORY = 5  # distinct causes kept once cleared
_LOGGED_MAX = 256  # distinct causes remembered as logged (a bound, not a limit anyone meets)


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def root_cause(error: BaseException) -> BaseException:
    """The exception in ``error``'s chain that says what really went wrong."""
    chain = _chain(error)
    for link in chain:
        if isinstance(link, OSError) and link.errno is not None:
            return link
    for link in chain:
        text = str(link)
        if any(system in text for system in _SYSTEM_ERRORS):
            return link
    if isinstance(error, StoreError):  # our own message, already clear
        return error
    return chain[-1]


def describe(error: BaseException) -> str:
    """One line for health and the log: the root cause's message."""
    cause = root_cause(error)
    text = " ".join(str(cause).split()) or type(cause).__name__
    if isinstance(cause, OSError | StoreError):
        return text
    return f"{type(cause).__name__}: {text}"


def cause_key(error: BaseException) -> str:
    """Equal for repeats of one cause (numbers in messages vary: row counts, offsets)."""
    cause = root_cause(error)
    if isinstance(cause, OSError) and cause.errno is not None:
        return f"errno:{cause.errno}"
    text = str(cause)
    for system in _SYSTEM_ERRORS:  # one disk, whatever the library calls it this time
        if system in text:
            return f"system:{system}"
    return f"{type(cause).__name__}:{_DIGITS.sub('#', text)[:200]}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    where: str
    error: str
    count: int
    first_at: str
    last_at: str


class ErrorLog:
    """Failures by place; not thread-safe (the recorder's writer thread owns it)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.failures = 0
        self.active: dict[str, ErrorRecord] = {}
        self.history: tuple[ErrorRecord, ...] = ()  # newest first, at most HISTORY
        self._logged: set[tuple[str, str]] = set()

    @property
    def current(self) -> str:
        return "; ".join(f"{where}: {r.error}" for where, r in self.active.items())

    @property
    def current_since(self) -> str | None:
        return min((r.first_at for r in self.active.values()), default=None)

    def failed(self, where: str, error: BaseException) -> None:
        """Count a failure at ``where``; the first of each distinct cause goes to the log."""
        self.failures += 1
        text, now = describe(error), _now()
        record = self.active.get(where)
        if record is not None and record.error == text:
            record = ErrorRecord(where, text, record.count + 1, record.first_at, now)
        else:
            record = ErrorRecord(where, text, 1, now, now)
        self.active[where] = record
        self.history = (
            record,
            *(r for r in self.history if (r.where, r.error) != (where, text)),
        )[:HISTORY]
        key = (where, cause_key(error))
        if key in self._logged:
            return
        if len(self._logged) >= _LOGGED_MAX:
            self._logged.clear()
        self._logged.add(key)
        self._log.error(
            "%s failed: %s (logged once; later failures are counted in health)",
            where,
            text,
            exc_info=error,
        )

    def cleared(self, where: str) -> None:
        """``where`` works again: its error leaves the active set (it stays in history)."""
        record = self.active.pop(where, None)
        if record is None:
            return
        self._logged = {key for key in self._logged if key[0] != where}
        self._log.warning(
            "%s works again after %d failure(s) since %s (last: %s)",
            where,
            record.count,
            record.first_at,
            record.error,
        )

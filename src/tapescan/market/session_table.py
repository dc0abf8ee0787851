"""The XNYS session table (every session's regular open and close), from ``exchange_calendars``.

``exchange_calendars`` is the source of truth for sessions, holidays and early closes, but it
needs pandas, and importing pandas costs a process ~55 MB of resident memory (a sixth of the
embedded process's 300 MB budget) for a table of ~3,000 rows. So the table is computed by a
short-lived child process (``python -m tapescan.market.session_table``) and cached as JSON in
the user's cache directory. The cache is keyed by the ``exchange_calendars`` version, the first
date and the day it was computed (the calendar's last session moves with today), so the first
process of a day pays ~1.5 s and the others read ~90 KB. If the child cannot run, the table is
computed in this process instead (correct, only larger), with a warning.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)
CHILD_TIMEOUT_S = 60.0


class SessionTable(msgspec.Struct, frozen=True):
    """Sessions in order with their regular open and close (Unix ns)."""

    calendar_version: str
    first: dt.date
    computed: dt.date
    sessions: list[dt.date]
    open_ns: list[int]
    close_ns: list[int]


def compute(first: dt.date) -> SessionTable:
    """The table from ``exchange_calendars`` in this process (imports pandas)."""
    import exchange_calendars as xcals  # noqa: PLC0415 - pandas only where the table is made

    xnys = xcals.get_calendar("XNYS", start=first.isoformat())
    return SessionTable(
        calendar_version=_calendar_version(),
        first=first,
        computed=dt.date.today(),
        sessions=[ts.date() for ts in xnys.sessions],
        open_ns=[int(v) for v in xnys.opens.to_numpy().astype("datetime64[ns]").astype("int64")],
        close_ns=[int(v) for v in xnys.closes.to_numpy().astype("datetime64[ns]").astype("int64")],
    )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tapescan"


def _calendar_version() -> str:
    try:
        return importlib.metadata.version("exchange_calendars")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cache_file(first: dt.date) -> Path:
    name = f"xnys-{_calendar_version()}-{first.isoformat()}-{dt.date.today().isoformat()}.json"
    return cache_dir() / name


def load(first: dt.date) -> SessionTable:
    """The table for sessions from ``first``: cached, else from a child process, else here."""
    path = _cache_file(first)
    try:
        return msgspec.json.decode(path.read_bytes(), type=SessionTable)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        done = subprocess.run(  # noqa: S603 - this interpreter, our own module, a date
            [sys.executable, "-m", "tapescan.market.session_table", first.isoformat()],
            capture_output=True,
            check=True,
            timeout=CHILD_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        encoded = done.stdout
        table = msgspec.json.decode(encoded, type=SessionTable)
    except (OSError, subprocess.SubprocessError, msgspec.DecodeError, msgspec.ValidationError):
        log.warning("market calendar: the child process failed; computing it here", exc_info=True)
        table = compute(first)
        encoded = msgspec.json.encode(table)
    _store(path, encoded)
    return table


def _store(path: Path, encoded: bytes) -> None:
    """Write the cache atomically; a cache that cannot be written only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("xnys-*.json"):
            if old != path:
                old.unlink(missing_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(encoded)
        partial.replace(path)
    except OSError:
        log.debug("market calendar: cannot write the cache %s", path, exc_info=True)


def main() -> None:
    sys.stdout.buffer.write(msgspec.json.encode(compute(dt.date.fromisoformat(sys.argv[1]))))


if __name__ == "__main__":
    main()

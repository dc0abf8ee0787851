"""Up to where today's minute bars are known to be complete, kept on disk across restarts.

REST fills a gap ticker by ticker (every minute of one ticker, then the next), so a run stopped
during a backfill leaves some tickers' early minutes in the store and not others'; and while the
socket is down no minute is complete. The newest stored bar therefore does not say where a
restart can resume. ``Coverage`` does: every minute bar of the session that starts before
``until_ns`` reached this process (from a finished gap, or from the socket while it was live:
up to the minute before its newest bar's), and it is written to a small JSON file
(``massive-coverage.json`` in the data folder, ~80 B) whenever it moves by a minute or more, or
back. A restart resumes REST from the earlier of the store's newest bar and that mark;
without a mark for today it takes the whole day from 04:00 again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tapescan.model import NS_PER_MINUTE

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Coverage:
    path: Path | None  # None: nothing kept (a restart resumes from the store's newest bar)
    session: dt.date | None = None
    until_ns: int = 0
    _saved_ns: int = -1
    # gaps not filled yet: one per drop at most, cleared when filled or at the next session
    # (a socket dropping every 30 s all day with REST down: ~2,000 pairs, ~200 KB)
    _open_gaps: list[tuple[int, int]] = field(default_factory=list)
    _socket_ns: int = 0  # complete up to here from the socket since it was last live again

    def resume_ns(self, session: dt.date, stored_ns: int | None) -> int | None:
        """Where today's REST backfill starts after a restart whose store ends at
        ``stored_ns`` (None: from 04:00)."""
        if stored_ns is None or self.path is None:
            return stored_ns
        kept = self._read()
        if kept is None or kept[0] != session:
            return None  # nothing says the stored minutes are whole: take the day again
        return min(stored_ns, kept[1])

    def start(self, session: dt.date, from_ns: int) -> None:
        """Complete up to ``from_ns`` (the start of today's first gap, or the live minute)."""
        self.session = session
        self.until_ns = from_ns
        self._save()

    def session_seen(self, session: dt.date, pre_open_ns: int, live_since_before: bool) -> None:
        """A socket bar during ``session``: a session the mark is not about yet (the run began
        before 04:00 ET, or runs across days) is complete from its start when the socket has
        been live since before it began; else nothing is sure yet."""
        if session != self.session:  # this session's gaps still open keep the mark at them
            self._open_gaps = [g for g in self._open_gaps if g[0] >= pre_open_ns]
            self._socket_ns = 0
            self.start(session, pre_open_ns if live_since_before else -1)

    def gap_opened(self, from_ns: int, to_ns: int) -> None:
        self._open_gaps.append((from_ns, to_ns))
        self._move(min(self.until_ns, from_ns))

    def gap_filled(self, from_ns: int, to_ns: int, failed: bool) -> None:
        """A gap is done; a failed one stays open (a restart asks for it again)."""
        if failed:
            return
        # the gaps it covers whole (a gap queued behind it may overlap its end: not covered)
        self._open_gaps = [g for g in self._open_gaps if not (from_ns <= g[0] and g[1] <= to_ns)]
        if not self._open_gaps:  # the gap ends where the socket was live again
            self._move(max(self.until_ns, to_ns, self._socket_ns))
        else:  # before the earliest gap still open, every minute is in (a gap's or live)
            self._move(max(self.until_ns, min(g[0] for g in self._open_gaps)))

    def socket_bar(self, complete_ns: int, socket_live: bool) -> None:
        """The live socket brought every minute before ``complete_ns`` (the feed passes the
        start of the minute before the one its newest bar ends in: one minute's bars of every
        ticker come in many frames, so a minute counts once the next one's come)."""
        if not socket_live:
            return
        self._socket_ns = max(self._socket_ns, complete_ns)
        if not self._open_gaps and complete_ns > self.until_ns:
            self._move(complete_ns)

    def socket_left(self, gap_from_ns: int) -> None:
        """The socket stopped being live: nothing after ``gap_from_ns`` is sure any more."""
        self._socket_ns = 0
        self._move(min(self.until_ns, gap_from_ns))

    def _move(self, until_ns: int) -> None:
        self.until_ns = until_ns
        if abs(until_ns - self._saved_ns) >= NS_PER_MINUTE or until_ns < self._saved_ns:
            self._save()

    def _read(self) -> tuple[dt.date, int] | None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return dt.date.fromisoformat(data["session"]), int(data["complete_until_ns"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring %s (%s): today's bars come from 04:00 again", self.path, error)
            return None

    def _save(self) -> None:
        if self.path is None or self.session is None:
            return
        text = json.dumps({"session": self.session.isoformat(), "complete_until_ns": self.until_ns})
        temporary = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, self.path)
            self._saved_ns = self.until_ns
        except OSError as error:  # a full disk: the restart takes the day again, no harm
            log.warning("cannot write %s: %s", self.path, error)
            with contextlib.suppress(OSError):
                temporary.unlink()

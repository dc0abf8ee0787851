"""The asyncio shell around the Massive session: it does the I/O that ``Link`` decides.

One task reads the socket and never waits on applying: data frames go into a bounded queue as
they are (bytes), and whoever consumes the feed drains the queue in batches through the pure
parser (``FrameParser.parse_many``). Status frames are small and are read at once, because the
session's next step depends on them. Frames have no size cap (a busy ``A.*`` second can exceed
the 1 MiB default of WebSocket libraries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tapescan.feeds.base import FeedFatalError
from tapescan.feeds.massive.link import Close, Connect, Fail, Link, LinkState, Send, Warn
from tapescan.feeds.massive.parse import FrameParser, ParsedFrame, status_messages

log = logging.getLogger(__name__)

TICK_S = 0.25  # how often the link hears that time passed while the socket is quiet
STATUS_FRAME_BYTES = 4_096  # a frame this small that names "status" is read at once
QUEUE_FRAMES = 10_000  # frames waiting for the parser (~1 KB to ~1 MB each)
BATCH_FRAMES = 256  # most frames parsed together


class MassiveFatalError(FeedFatalError):
    """No retry can help (exit code 2): the message says what to fix."""


class MassiveAuthError(MassiveFatalError):
    """The key was refused."""


# websockets logs every frame it sends at DEBUG, the auth message (and so the key) included.
_socket_log = logging.getLogger("tapescan.feeds.massive.socket")
_socket_log.setLevel(logging.INFO)


class MassiveClient:
    def __init__(
        self,
        url: str,
        link: Link,
        parser: FrameParser,
        *,
        queue_frames: int = QUEUE_FRAMES,
        clock: Callable[[], float] = time.monotonic,
        in_session: Callable[[], bool] = lambda: True,
    ) -> None:
        self.url = url
        self.link = link
        self.parser = parser
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_frames)
        self.warnings: list[str] = []  # the latest first lines of warnings, for health
        self._clock = clock
        self._in_session = in_session
        self._socket: ClientConnection | None = None
        self._failure: str | None = None
        self._stopping = False
        self._progress = asyncio.Condition()  # notified after every event of the session

    @property
    def state(self) -> LinkState:
        return self.link.state

    async def run(self) -> None:
        """Keep the session up until ``stop``; raises MassiveAuthError when the key is refused,
        MassiveFatalError when the URL cannot work."""
        try:
            await self._session()
        finally:
            if self._socket is not None:  # a stop that came while connecting
                await self._socket.close()
                self._socket = None

    async def _session(self) -> None:
        await self._execute(self.link.start(self._clock()))
        while not self._stopping:
            if self._failure is not None:
                raise MassiveAuthError(self._failure)
            socket = self._socket
            if socket is None:
                due = self.link.reconnect_at
                wait = TICK_S if due is None else min(TICK_S, max(0.0, due - self._clock()))
                await asyncio.sleep(wait)
                await self._tick()
                continue
            try:
                frame = await asyncio.wait_for(socket.recv(decode=False), TICK_S)
            except TimeoutError:
                await self._tick()
                continue
            except ConnectionClosed as closed:
                await self._lost(closed)
                continue
            await self._frame(frame)
        if self._failure is not None:
            raise MassiveAuthError(self._failure)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checked after each event of the session."""
        async with self._progress:
            await self._progress.wait_for(condition)

    async def stop(self) -> None:
        self._stopping = True
        if self._socket is not None:
            await self._socket.close()

    async def batches(self) -> AsyncIterator[ParsedFrame]:
        """Parsed batches of whatever frames are waiting (one at least), as they come."""
        while True:
            frames = [await self.frames.get()]
            while len(frames) < BATCH_FRAMES and not self.frames.empty():
                frames.append(self.frames.get_nowait())
            yield self.parser.parse_many(frames)

    # ------------------------------------------------------------------ I/O of the link

    async def _frame(self, frame: bytes) -> None:
        now = self._clock()
        if len(frame) <= STATUS_FRAME_BYTES and b'"status"' in frame:
            statuses, only = status_messages(frame)
            if statuses:
                await self._execute(self.link.statuses(now, statuses))
            if only:
                return
        await self._execute(self.link.data(now))
        await self.frames.put(frame)  # waits only when the parser is 10,000 frames behind

    async def _tick(self) -> None:
        await self._execute(self.link.tick(self._clock(), self._in_session()))

    async def _lost(self, closed: ConnectionClosed) -> None:
        self._socket = None
        code = closed.rcvd.code if closed.rcvd is not None else 1006
        reason = closed.rcvd.reason if closed.rcvd is not None else ""
        await self._execute(self.link.closed(self._clock(), code, reason))

    async def _execute(self, actions: list[Connect | Send | Close | Warn | Fail]) -> None:
        for action in actions:
            if isinstance(action, Connect):
                await self._connect()
            elif isinstance(action, Send):
                if self._socket is not None:
                    with contextlib.suppress(ConnectionClosed):
                        await self._socket.send(action.text)
            elif isinstance(action, Close):
                if self._socket is not None:
                    await self._socket.close(1000, action.reason[:120])
            elif isinstance(action, Warn):
                log.warning("%s", action.message)
                self.warnings = [action.message, *self.warnings[:9]]
            else:
                log.error("%s", action.message)
                self._failure = action.message
        async with self._progress:
            self._progress.notify_all()

    async def _connect(self) -> None:
        try:
            self._socket = await connect(
                self.url,
                max_size=None,
                open_timeout=self.link.handshake_timeout_s,
                ping_interval=20,
                ping_timeout=20,
                logger=_socket_log,
            )
        except InvalidURI as error:
            raise MassiveFatalError(f"not a WebSocket URL: {self.url} ({error})") from None
        except (OSError, TimeoutError, InvalidHandshake) as error:
            self._socket = None
            log.warning("cannot connect to %s: %s", self.url, error)
            await self._execute(self.link.closed(self._clock(), None, str(error)))
            return
        await self._execute(self.link.opened(self._clock()))

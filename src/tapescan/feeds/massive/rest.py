"""Massive's REST API, as the feed's warm-up needs it: one connection pool, timeouts, retries.

The key goes in the ``Authorization: Bearer`` header of every request, so it survives
``next_url`` pagination (whose URLs do not carry it) and never appears in a URL that could be
logged. What each answer means, in the order it is decided:

- 200 with ``status`` OK or DELAYED: the body (``results`` may be missing: no rows);
- 401 / 403: the key is unknown, or the plan does not cover the data: MassiveFatalError (exit 2),
  never retried;
- 429 and 5xx (an HTML 504 page included) and transport errors: retried up to ``attempts``
  times, waiting ``Retry-After`` when given, else 0.5 s doubling up to ``backoff_cap_s``;
- any other status: MassiveRestError with the server's message.

``next_url`` is followed only on the base URL's own scheme and host: the key is never sent
elsewhere, nor over plain HTTP when the base is HTTPS.

Synchronous on purpose: the warm-up runs in a worker thread, one request after another; a stop
request ends it between two requests (``on_request``, or the warm-up's own step callback).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import msgspec

from tapescan.feeds.base import FeedError
from tapescan.feeds.massive.client import MassiveFatalError

DEFAULT_REST_URL = "https://api.massive.com"
TIMEOUT_S = 30.0  # one request: connect, read a page (a 1,000-row page is ~300 KB)
ATTEMPTS = 6  # per request, the first included
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
REQUEST_THREADS = 8  # requests in flight at once (the per-ticker minute aggregates)
PAGES_MAX = 1_000  # a paginated listing longer than this is a server bug, not data
OK_STATUSES = frozenset({"OK", "DELAYED"})

T = TypeVar("T")
Decoder = msgspec.json.Decoder
_decode = msgspec.json.Decoder(dict[str, Any])
# httpx logs every request at INFO: thousands of lines in a warm-up. Failures are ours to say.
logging.getLogger("httpx").setLevel(logging.WARNING)


class MassiveRestError(FeedError):
    """A request failed for good (after its retries); the message names the endpoint."""


class RestInterruptedError(MassiveRestError):
    """The process is stopping (``MassiveFeed.interrupt``): the request was not made again."""


@dataclass(slots=True)
class RestCounters:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    seconds: float = 0.0  # spent in requests, waits for retries included (summed over threads)
    last_error: str | None = None
    by_path: dict[str, int] = field(default_factory=dict)  # requests per endpoint family


class MassiveRest:
    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_REST_URL,
        *,
        attempts: int = ATTEMPTS,
        backoff_cap_s: float = BACKOFF_CAP_S,
        timeout_s: float = TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
        on_request: Callable[[], None] | None = None,
        counters: RestCounters | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise MassiveFatalError(f"not an HTTP URL for the Massive REST API: {base_url}")
        self.base_url = base_url.rstrip("/")
        self.counters = counters if counters is not None else RestCounters()
        self._attempts = attempts
        self._backoff_cap_s = backoff_cap_s
        self._sleep = sleep
        self._on_request = on_request
        self._stop = stop  # set: no new attempt, and a retry's wait ends (RestInterruptedError)
        self._lock = threading.Lock()  # the client is shared by the warm-up's request threads
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {api_key}", "Accept-Encoding": "gzip"},
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=REQUEST_THREADS, max_keepalive_connections=REQUEST_THREADS
            ),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MassiveRest:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """One JSON answer of ``path`` (relative to the base URL, or a full ``next_url``)."""
        return self.get_as(path, params, _decode)

    def get_as(self, path: str, params: dict[str, str] | None, decoder: Decoder[T]) -> T:
        """One JSON answer of ``path`` decoded by ``decoder`` (a typed one keeps only the
        fields it names: a full-market snapshot's ~10 MB never become Python objects whole).
        An answer of the wrong shape is a ``MassiveRestError``."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        family = _family(path)
        started = time.monotonic()
        try:
            return self._get(url, params, family, decoder)
        finally:
            with self._lock:
                self.counters.seconds += time.monotonic() - started

    def pages(self, path: str, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a listing, following ``next_url`` (the key stays in the header)."""
        body = self.get(path, params)
        yield body
        for _ in range(PAGES_MAX):
            next_url = body.get("next_url")
            if not isinstance(next_url, str) or not next_url:
                return
            if not _same_origin(next_url, self.base_url):
                raise MassiveRestError(
                    f"{_family(path)}: next_url leaves {self.base_url}; not followed with the key"
                )
            body = self.get(next_url)
            yield body
        raise MassiveRestError(f"{_family(path)}: more than {PAGES_MAX} pages")

    def _get(self, url: str, params: dict[str, str] | None, family: str, decoder: Decoder[T]) -> T:
        wait = BACKOFF_BASE_S
        for attempt in range(1, self._attempts + 1):
            if self._on_request is not None:
                self._on_request()  # where a stop request ends the warm-up
            if self._stop is not None and self._stop.is_set():
                raise RestInterruptedError(f"{family}: stopped")
            with self._lock:
                self.counters.requests += 1
                self.counters.by_path[family] = self.counters.by_path.get(family, 0) + 1
            retry_after: float | None = None
            try:
                response = self._http.get(url, params=params)
            except httpx.HTTPError as error:  # transport, protocol, undecodable body
                problem = f"{family}: {type(error).__name__}: {error}"
            else:
                code = response.status_code
                if code == 200:
                    return self._body(response, family, decoder)
                message = _message(response)
                if code in (401, 403):
                    raise MassiveFatalError(
                        f"Massive refused the key for {family} ({code}: {message}); check "
                        "MASSIVE_API_KEY and that the plan covers this data"
                    )
                if code != 429 and code < 500:
                    raise MassiveRestError(f"{family}: HTTP {code}: {message}")
                if code == 429:
                    with self._lock:
                        self.counters.rate_limited += 1
                retry_after = _retry_after(response)
                problem = f"{family}: HTTP {code}: {message}"
            with self._lock:
                self.counters.last_error = problem
            if attempt == self._attempts:
                raise MassiveRestError(f"{problem} (gave up after {attempt} attempts)")
            with self._lock:
                self.counters.retries += 1
            pause = min(self._backoff_cap_s, retry_after if retry_after is not None else wait)
            if self._stop is not None:
                if self._stop.wait(pause):
                    raise RestInterruptedError(f"{family}: stopped while waiting to retry")
            else:
                self._sleep(pause)
            wait = min(self._backoff_cap_s, wait * 2)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _body(response: httpx.Response, family: str, decoder: Decoder[T]) -> T:
        try:
            body = decoder.decode(response.content)
        except msgspec.DecodeError as error:  # ValidationError included
            raise MassiveRestError(f"{family}: the answer is not of its shape ({error})") from None
        status = body.get("status") if isinstance(body, dict) else getattr(body, "status", None)
        if status is not None and status not in OK_STATUSES:
            said = body.get("error") if isinstance(body, dict) else getattr(body, "error", None)
            raise MassiveRestError(f"{family}: status {status}: {said or ''}")
        return body


def in_order(
    pool: ThreadPoolExecutor,
    rows: Iterable[int],
    fetch: Callable[[int], T],
    ahead: int = REQUEST_THREADS * 4,
) -> Generator[tuple[int, Future[T]], None, None]:
    """``fetch(row)`` of each row run on ``pool``, ``ahead`` of them queued at a time, handed out
    as (row, future) in the order of ``rows`` (the caller takes each result, or its error).
    Closing the generator (``contextlib.closing``) cancels the requests not started: a stop
    waits for those in flight only."""
    remaining = iter(rows)
    pending: deque[tuple[int, Future[T]]] = deque(
        (row, pool.submit(fetch, row)) for row in itertools.islice(remaining, ahead)
    )
    try:
        while pending:
            row, future = pending.popleft()
            following = next(remaining, None)
            if following is not None:
                pending.append((following, pool.submit(fetch, following)))
            yield row, future
    finally:
        for _, future in pending:
            future.cancel()


def _same_origin(url: str, base_url: str) -> bool:
    given, base = httpx.URL(url), httpx.URL(base_url)
    return (given.scheme, given.host, given.port) == (base.scheme, base.host, base.port)


def public_url(url: str) -> str:
    """``url`` without a query or user info, fit for health and logs."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))


def _family(path: str) -> str:
    """The endpoint without its query and variable parts, for counters and messages."""
    if path.startswith(("http://", "https://")):
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = path.partition("?")[0]
    parts = path.strip("/").split("/")
    if parts[:2] == ["v2", "snapshot"]:
        return "/v2/snapshot"
    if parts[:2] == ["v2", "aggs"] and len(parts) > 2:
        return "/v2/aggs/" + parts[2]
    if parts[:3] == ["v3", "reference", "tickers"]:
        return "/v3/reference/tickers" + ("/{ticker}" if len(parts) > 3 else "")
    return "/" + "/".join(parts[:4])


def _message(response: httpx.Response) -> str:
    try:
        body = _decode.decode(response.content)
    except msgspec.DecodeError:
        return response.text[:80].strip().replace("\n", " ") or response.reason_phrase
    text = body.get("error") or body.get("message") or body.get("status") or ""
    return str(text)[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

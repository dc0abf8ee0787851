"""The ASGI application: REST under /api/v1, the WebSocket, metrics and the web page."""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import time
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Body, FastAPI, Header, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tapescan import __version__
from tapescan.api import examples
from tapescan.api.errors import ApiError
from tapescan.api.guard import Guard, GuardSettings
from tapescan.api.history_reads import HistoryReads
from tapescan.api.history_routes import bad_cursor, cursor_json, history_router, scan_at
from tapescan.api.ws import serve_websocket
from tapescan.config import Settings
from tapescan.feeds.base import Feed
from tapescan.feeds.monitor import FeedMonitor
from tapescan.indicators.catalog import COLUMNS
from tapescan.market.calendar import MarketCalendar, NotASessionError, ns_to_utc
from tapescan.market.clock import Clock
from tapescan.model import FeedState, Universe
from tapescan.ops.gc_pauses import GcPauses
from tapescan.publish.frames import Frame, iso
from tapescan.publish.hub import Hub
from tapescan.scan.definition import ScanValidationError
from tapescan.scan.registry import ScanConflictError, ScanRegistry
from tapescan.scan.scanner import Scanner, ScanStats
from tapescan.store.base import Store
from tapescan.store.history import History
from tapescan.store.recorder import Recorder

WEB_DIRECTORY = Path(__file__).parent / "web"
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class NodeView(Protocol):
    """What the API reads from the running process."""

    settings: Settings
    clock: Clock
    calendar: MarketCalendar
    monitor: FeedMonitor
    feed: Feed
    started_ns: int
    stats: ScanStats
    gc_pauses: GcPauses
    scanner: Scanner
    hub: Hub
    registry: ScanRegistry
    universe: Universe

    history: History
    recorder: Recorder
    store: Store

    recovery: Any

    def status_frame(self) -> Frame: ...

    def symbol_values(self, row: int) -> tuple[int, dict[str, Any]]: ...


class FeedHealth(BaseModel):
    name: str
    state: str
    message: str
    batches: int
    aggregates: int
    halts: int
    bands: int
    last_event: str | None
    lag_ms: float
    connection: dict[str, Any] | None = None  # a live feed's socket and REST counters


class ClockHealth(BaseModel):
    now: str
    speed: float | None


class SessionHealth(BaseModel):
    date: str
    phase: str


class ScanHealth(BaseModel):
    warmed_up: bool
    feed_finished: bool
    warmup_step: str
    warmup_done: int
    warmup_total: int
    cycles: int
    last_cycle_ms: float
    deltas: int


class StoreErrorRecord(BaseModel):
    where: str
    error: str
    count: int
    first_at: str
    last_at: str


class StoreHealth(BaseModel):
    backend: str
    up: bool
    queued_rows: int
    written_rows: int
    spilled_rows: int
    spill_files: int
    restored_rows: int
    lost_rows: int
    interrupted_writes: int
    last_write_ms: float
    failures: int
    last_error: str  # what fails now (the root cause); empty once writes go through again
    last_error_at: str | None
    recent_errors: list[StoreErrorRecord]  # the last distinct causes, newest first
    warmup_source: str  # "store", "feed", or "store and feed"
    warmup_feed_sessions: int  # of the 40 warm-up sessions, those the feed gave
    details_source: str  # "store" or "feed": the day's reference details (a live feed's)
    recovered_bars: int


class GcPause(BaseModel):
    at: str
    generation: int
    ms: float
    collected: int


class GcHealth(BaseModel):
    collections: list[int]
    pause_ms_total: list[float]
    pause_ms_max: list[float]
    long_pauses: list[GcPause]
    frozen_objects: int


class FanoutHealth(BaseModel):
    clients: int
    lagging: int
    sent_frames: int
    dropped_frames: int
    resnapshots: int
    disconnected_lagging: int


class FanoutCycle(BaseModel):
    sent_ns: int
    readers_ms: float
    all_ms: float


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float
    feed: FeedHealth
    clock: ClockHealth
    session: SessionHealth
    scans: ScanHealth
    store: StoreHealth
    clients: int
    gc: GcHealth
    fanout: FanoutHealth
    fanout_cycles: list[FanoutCycle]  # the last stamped cycles (ws_stamp_frames only)


def health_of(node: NodeView) -> Health:
    monitor = node.monitor
    now_ns = node.clock.now_ns()
    failed = monitor.state is FeedState.FAILED
    stats = node.stats
    recorder = node.recorder.stats
    degraded = bool(recorder.last_error) or not recorder.store_up  # history is not recorded
    return Health(
        status="failed" if failed else "degraded" if degraded else "ok",
        version=__version__,
        uptime_s=round((time.monotonic_ns() - node.started_ns) / 1e9, 3),
        feed=FeedHealth(
            name=monitor.name,
            state=monitor.state.value,
            message=monitor.message,
            batches=monitor.batches,
            aggregates=monitor.aggregates,
            halts=monitor.halts,
            bands=monitor.bands,
            last_event=ns_to_utc(monitor.last_event_ns).isoformat()
            if monitor.last_event_ns
            else None,
            lag_ms=round(monitor.last_lag_ns / 1e6, 3),
            connection=node.feed.connection(),
        ),
        clock=ClockHealth(now=ns_to_utc(now_ns).isoformat(), speed=node.clock.speed),
        session=SessionHealth(
            date=node.calendar.trading_day(now_ns).isoformat(),
            phase=node.calendar.phase(now_ns).value,
        ),
        scans=ScanHealth(
            warmed_up=stats.warmed_up,
            feed_finished=stats.feed_finished,
            warmup_step=stats.warmup_step,
            warmup_done=stats.warmup_done,
            warmup_total=stats.warmup_total,
            cycles=stats.cycles,
            last_cycle_ms=round(stats.last_cycle_ms, 3),
            deltas=stats.deltas,
        ),
        store=StoreHealth(
            backend=node.store.backend,
            up=recorder.store_up,
            queued_rows=recorder.queued_rows,
            written_rows=recorder.written_rows,
            spilled_rows=recorder.spilled_rows,
            spill_files=recorder.spill_files,
            restored_rows=recorder.restored_rows,
            lost_rows=recorder.lost_rows,
            interrupted_writes=recorder.interrupted_writes,
            last_write_ms=round(recorder.last_write_ms, 3),
            failures=recorder.failures,
            last_error=recorder.last_error,
            last_error_at=recorder.last_error_at,
            recent_errors=[
                StoreErrorRecord(**dataclasses.asdict(r)) for r in recorder.recent_errors
            ],
            warmup_source=node.recovery.warmup_source,
            warmup_feed_sessions=node.recovery.warmup_feed_sessions,
            details_source=node.recovery.details_source,
            recovered_bars=node.recovery.recovered_bars,
        ),
        clients=len(node.hub.clients),
        gc=_gc_health(node.gc_pauses),
        fanout=FanoutHealth(**dataclasses.asdict(node.hub.summary())),
        fanout_cycles=[
            FanoutCycle(
                sent_ns=t.sent_ns,
                readers_ms=round(t.readers_ns / 1e6, 3),
                all_ms=round(t.all_ns / 1e6, 3),
            )
            for t in node.hub.cycle_timings
        ],
    )


def _gc_health(pauses: GcPauses) -> GcHealth:
    summary = pauses.summary()
    return GcHealth(
        collections=summary["collections"],
        pause_ms_total=summary["pause_ms_total"],
        pause_ms_max=summary["pause_ms_max"],
        long_pauses=[
            GcPause(
                at=ns_to_utc(p["at_ns"]).isoformat(),
                generation=p["generation"],
                ms=p["ms"],
                collected=p["collected"],
            )
            for p in summary["long_pauses"]
        ],
        frozen_objects=summary["frozen_objects"],
    )


def _cursor_offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    found = cursor_json(cursor)
    offset = found.get("o") if isinstance(found, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise bad_cursor()
    return offset


def paginate(items: list[Any], limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
    offset = _cursor_offset(cursor)
    page = items[offset : offset + limit]
    end = offset + len(page)
    following = (
        base64.urlsafe_b64encode(json.dumps({"o": end}).encode()).decode()
        if end < len(items)
        else None
    )
    return page, following


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size (at most 1000).")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


def create_app(node: NodeView) -> FastAPI:
    app = FastAPI(
        title="tapescan",
        version=__version__,
        description="Real-time US equities scanner. WebSocket protocol: docs/protocol.md.",
        openapi_url="/openapi.json",
        # The interactive docs load their scripts from a CDN into the page's origin: off.
        # /openapi.json is served; any OpenAPI viewer can open it (docs/hardening.md).
        docs_url=None,
        redoc_url=None,
    )
    settings = node.settings
    reads = HistoryReads(settings.history_timeout_s, settings.history_max_reads)
    app.state.history_reads = reads  # closed by the node at shutdown
    origins = list(node.settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": error.code, "message": str(error), **error.extra}, error.status
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        message = {
            404: "no such endpoint or file; GET /openapi.json lists the API",
            405: "this endpoint does not take that method; GET /openapi.json lists them",
        }.get(error.status_code, str(error.detail))
        return JSONResponse(
            {"error": code, "message": message}, error.status_code, headers=error.headers
        )

    @app.exception_handler(NotASessionError)
    async def outside_calendar(_: Request, error: NotASessionError) -> JSONResponse:
        return JSONResponse({"error": "outside_calendar", "message": str(error)}, 400)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, __: Exception) -> JSONResponse:
        # Starlette re-raises it afterwards, so uvicorn logs the traceback.
        return JSONResponse(
            {"error": "internal_error", "message": "the server failed; the log says why"}, 500
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [
            {"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in error.errors()
        ]
        message = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
        return JSONResponse(
            {"error": "invalid_request", "message": message, "fields": fields}, status_code=422
        )

    @app.exception_handler(ScanValidationError)
    async def invalid_scan(_: Request, error: ScanValidationError) -> JSONResponse:
        fields = [{"path": e.path, "message": e.message} for e in error.errors]
        return JSONResponse(
            {"error": "invalid_scan", "message": str(error), "fields": fields}, status_code=422
        )

    def admin(authorization: str | None) -> None:
        token = node.settings.admin_token
        if token is None:
            raise ApiError(
                403,
                "admin_disabled",
                "admin endpoints are off: start the server with TAPESCAN_ADMIN_TOKEN set",
            )
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(
                401, "unauthorized", "send 'Authorization: Bearer <TAPESCAN_ADMIN_TOKEN>'"
            )
        if not hmac.compare_digest(
            authorization.removeprefix("Bearer ").encode(), token.get_secret_value().encode()
        ):
            raise ApiError(403, "forbidden", "the admin token is wrong")

    def scan_or_404(scan_id: str) -> None:
        if node.registry.get(scan_id) is None:
            raise ApiError(
                404, "unknown_scan", f"no scan '{scan_id}'; GET /api/v1/scans lists them"
            )

    @app.get("/api/v1/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """Liveness, feed, clock and scan loop; 503 when the feed has failed."""
        report = health_of(node)
        return JSONResponse(
            report.model_dump(), status_code=503 if report.status == "failed" else 200
        )

    @app.get("/api/v1/session", responses=examples.SESSION)
    async def session() -> dict[str, Any]:
        """The trading session the clock is in, its phase and its boundaries."""
        now = node.clock.now_ns()
        times = node.calendar.session(node.calendar.trading_day(now))
        return {
            "date": times.date.isoformat(),
            "phase": times.phase_at(now).value,
            "now": iso(now),
            "early_close": times.early_close,
            "pre_open": iso(times.pre_open_ns),
            "regular_open": iso(times.regular_open_ns),
            "regular_close": iso(times.regular_close_ns),
            "post_close": iso(times.post_close_ns),
        }

    @app.get("/api/v1/scans", responses=examples.SCANS)
    async def list_scans(limit: Limit = DEFAULT_PAGE, cursor: Cursor = None) -> dict[str, Any]:
        """Every scan definition, built-in and user."""
        items, following = paginate(
            [s.to_dict() for s in node.registry.definitions()], limit, cursor
        )
        return {"items": items, "next_cursor": following}

    @app.get("/api/v1/scans/columns", responses=examples.COLUMNS)
    async def list_columns(limit: Limit = DEFAULT_PAGE, cursor: Cursor = None) -> dict[str, Any]:
        """Every column a scan can filter, sort or show."""
        rows = [
            {"name": c.name, "kind": c.kind.value, "description": c.description} for c in COLUMNS
        ]
        items, following = paginate(rows, limit, cursor)
        return {"items": items, "next_cursor": following}

    @app.get("/api/v1/scans/{scan_id}", responses=examples.SCAN)
    async def get_scan(scan_id: str) -> dict[str, Any]:
        scan_or_404(scan_id)
        definition = node.registry.get(scan_id)
        assert definition is not None
        return definition.to_dict()

    @app.post("/api/v1/scans", status_code=201, responses=examples.CREATED)
    async def create_scan(
        body: Annotated[dict[str, Any], Body(openapi_examples=examples.SCAN_BODY_EXAMPLES)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Create a user scan (admin). 422 lists every invalid field."""
        admin(authorization)
        try:
            return node.registry.create(body).to_dict()
        except ScanConflictError as error:
            raise ApiError(409, "scan_exists", str(error)) from None

    @app.put("/api/v1/scans/{scan_id}", responses=examples.CREATED)
    async def replace_scan(
        scan_id: str, body: dict[str, Any], authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        """Replace a scan's definition (admin)."""
        admin(authorization)
        scan_or_404(scan_id)
        return node.registry.replace(scan_id, body).to_dict()

    @app.delete("/api/v1/scans/{scan_id}", status_code=204)
    async def delete_scan(
        scan_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> Response:
        """Delete a scan made through the API (admin)."""
        admin(authorization)
        scan_or_404(scan_id)
        try:
            node.registry.delete(scan_id)
        except ScanConflictError as error:
            raise ApiError(409, "not_deletable", str(error)) from None
        return Response(status_code=204)

    @app.get("/api/v1/scans/{scan_id}/results", responses=examples.RESULTS)
    async def scan_results(
        scan_id: str, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None, at: str | None = None
    ) -> dict[str, Any]:
        """The current result (rows in rank order, display precision), or with ``at`` (ISO 8601)
        the result as it was published at that instant, rebuilt from recorded history."""
        if at is not None:
            return await scan_at(reads, node.history, node.calendar, scan_id, at, limit, cursor)
        scan_or_404(scan_id)
        snapshot = node.scanner.snapshot(scan_id)
        rows, following = paginate([list(r) for r in snapshot.rows], limit, cursor)
        return {
            "scan": scan_id,
            "seq": snapshot.seq,
            "asof": iso(snapshot.asof_ns),
            "columns": list(snapshot.columns),
            "rows": rows,
            "next_cursor": following,
        }

    @app.get("/api/v1/symbols/{symbol}", responses=examples.SYMBOL)
    async def symbol(symbol: str) -> dict[str, Any]:
        """Every column of one symbol, at full precision (null when unknown)."""
        row = node.universe.index_of(symbol.upper())
        if row < 0:
            raise ApiError(
                404,
                "unknown_symbol",
                f"'{symbol}' is not in the universe of {len(node.universe)} symbols",
            )
        asof_ns, values = node.symbol_values(row)
        return {"symbol": symbol.upper(), "asof": iso(asof_ns), "values": values}

    app.include_router(
        history_router(
            reads,
            lambda: node.history,
            node.calendar,
            node.clock.now_ns,
            lambda symbol: node.universe.index_of(symbol) >= 0,
        )
    )

    registry = CollectorRegistry()
    registry.register(_NodeCollector(node))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def websocket(websocket: WebSocket) -> None:
        await serve_websocket(
            websocket,
            node.hub,
            lambda: [s.id for s in node.registry.definitions()],
            node.status_frame(),
        )

    if WEB_DIRECTORY.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIRECTORY, html=True), name="web")
    app.add_middleware(
        Guard,  # outermost: before CORS, routing and any body is read
        settings=GuardSettings(
            bound_host=settings.host,
            allowed_hosts=tuple(settings.allowed_hosts),
            cors_origins=tuple(settings.cors_origins),
            max_body_bytes=settings.http_max_body_bytes,
            body_timeout_s=settings.http_body_timeout_s,
            admin=admin,
        ),
    )
    return app


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def _connection_values(connection: dict[str, Any] | None) -> dict[str, tuple[str, float]]:
    """A live feed's socket and REST counters as metrics (none for the sim and replay feeds)."""
    if connection is None:
        return {}
    socket, rest = connection["socket"], connection["rest"]
    return {
        "tapescan_feed_socket_live": (
            "1 while the feed's socket session is live",
            float(socket.get("state") == "live"),
        ),
        "tapescan_feed_socket_reconnects": (
            "Reconnects of the feed's socket since start-up",
            float(socket.get("reconnects", 0)),
        ),
        "tapescan_feed_socket_queued_frames": (
            "Frames read from the socket and waiting for the parser",
            float(socket.get("queued_frames", 0)),
        ),
        "tapescan_feed_malformed_messages": (
            "Socket messages skipped as malformed",
            float(socket.get("malformed_messages", 0)),
        ),
        "tapescan_feed_rest_requests": ("REST requests since start-up", float(rest["requests"])),
        "tapescan_feed_rest_retries": ("REST requests retried", float(rest["retries"])),
        "tapescan_feed_rest_rate_limited": ("REST answers 429", float(rest["rate_limited"])),
    }


class _NodeCollector:
    def __init__(self, node: NodeView) -> None:
        self._node = node

    def collect(self) -> Any:
        node = self._node
        fanout = node.hub.summary()
        values = {
            "tapescan_ws_clients": ("Connected WebSocket clients", len(node.hub.clients)),
            "tapescan_ws_queued_frames": (
                "Frames queued for all clients",
                sum(c.queued for c in node.hub.clients),
            ),
            "tapescan_ws_lagging_clients": (
                "Clients behind: deltas dropped until they catch up",
                fanout.lagging,
            ),
            "tapescan_ws_dropped_frames": (
                "Frames dropped for lagging clients since start-up",
                fanout.dropped_frames,
            ),
            "tapescan_ws_disconnected_lagging": (
                "Clients closed after staying behind past the lag timeout",
                fanout.disconnected_lagging,
            ),
            "tapescan_scan_cycles": ("Scan cycles run", node.stats.cycles),
            "tapescan_scan_cycle_ms": ("Duration of the last scan cycle", node.stats.last_cycle_ms),
            "tapescan_feed_aggregates": ("Aggregates received", node.monitor.aggregates),
            "tapescan_feed_lag_ms": ("Lag of the last event", node.monitor.last_lag_ns / 1e6),
            "tapescan_recorder_queued_rows": (
                "Rows waiting for the store (memory)",
                node.recorder.stats.queued_rows,
            ),
            "tapescan_recorder_written_rows": (
                "Rows committed to the store",
                node.recorder.stats.written_rows,
            ),
            "tapescan_recorder_spilled_rows": (
                "Rows spilled to Parquet while the store was down",
                node.recorder.stats.spilled_rows,
            ),
            "tapescan_recorder_spill_files": (
                "Spill files waiting to be written back",
                node.recorder.stats.spill_files,
            ),
            "tapescan_recorder_lost_rows": (
                "Rows dropped because the spill directory was full",
                node.recorder.stats.lost_rows,
            ),
            "tapescan_recorder_interrupted_writes": (
                "Store calls broken off after hanging past recorder_write_timeout_s",
                node.recorder.stats.interrupted_writes,
            ),
            "tapescan_recorder_last_write_ms": (
                "Duration of the last store write",
                node.recorder.stats.last_write_ms,
            ),
            "tapescan_store_up": ("1 when the store answers", float(node.recorder.stats.store_up)),
            "tapescan_ingest_rejected": (
                "Rows refused by state",
                node.scanner.state.counters.rejected,
            ),
        }
        values.update(_connection_values(node.feed.connection()))
        for name, (help_text, value) in values.items():
            yield GaugeMetricFamily(name, help_text, value=float(value))
        pauses = node.gc_pauses
        for name, help_text, per_generation in (
            ("tapescan_gc_collections", "Garbage collections run", pauses.collections),
            ("tapescan_gc_pause_seconds", "Time stopped in garbage collections", pauses.total_ns),
            ("tapescan_gc_pause_max_seconds", "Longest garbage collection", pauses.max_ns),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["generation"])
            for generation, value in enumerate(per_generation):
                scale = 1.0 if name == "tapescan_gc_collections" else 1e-9
                family.add_metric([str(generation)], value * scale)
            yield family

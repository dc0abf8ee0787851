"""The ASGI application: REST under /api/v1 (the serving issue adds the rest)."""

from __future__ import annotations

import time
from typing import Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tapescan import __version__
from tapescan.feeds.monitor import FeedMonitor
from tapescan.market.calendar import MarketCalendar, ns_to_utc
from tapescan.market.clock import Clock
from tapescan.model import FeedState
from tapescan.scan.scanner import ScanStats


class NodeView(Protocol):
    """What the API reads from the running process."""

    @property
    def clock(self) -> Clock: ...

    @property
    def calendar(self) -> MarketCalendar: ...

    @property
    def monitor(self) -> FeedMonitor: ...

    @property
    def started_ns(self) -> int: ...

    @property
    def stats(self) -> ScanStats: ...


class FeedHealth(BaseModel):
    name: str
    state: str
    message: str
    batches: int
    aggregates: int
    halts: int
    last_event: str | None
    lag_ms: float


class ClockHealth(BaseModel):
    now: str
    speed: float | None


class SessionHealth(BaseModel):
    date: str
    phase: str


class ScanHealth(BaseModel):
    warmed_up: bool
    warmup_done: int
    warmup_total: int
    cycles: int
    last_cycle_ms: float
    deltas: int


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float
    feed: FeedHealth
    clock: ClockHealth
    session: SessionHealth
    scans: ScanHealth


def health_of(node: NodeView) -> Health:
    monitor = node.monitor
    now_ns = node.clock.now_ns()
    failed = monitor.state is FeedState.FAILED
    return Health(
        status="failed" if failed else "ok",
        version=__version__,
        uptime_s=round((time.monotonic_ns() - node.started_ns) / 1e9, 3),
        feed=FeedHealth(
            name=monitor.name,
            state=monitor.state.value,
            message=monitor.message,
            batches=monitor.batches,
            aggregates=monitor.aggregates,
            halts=monitor.halts,
            last_event=ns_to_utc(monitor.last_event_ns).isoformat()
            if monitor.last_event_ns
            else None,
            lag_ms=round(monitor.last_lag_ns / 1e6, 3),
        ),
        clock=ClockHealth(now=ns_to_utc(now_ns).isoformat(), speed=node.clock.speed),
        session=SessionHealth(
            date=node.calendar.trading_day(now_ns).isoformat(),
            phase=node.calendar.phase(now_ns).value,
        ),
        scans=ScanHealth(
            warmed_up=node.stats.warmed_up,
            warmup_done=node.stats.warmup_done,
            warmup_total=node.stats.warmup_total,
            cycles=node.stats.cycles,
            last_cycle_ms=round(node.stats.last_cycle_ms, 3),
            deltas=node.stats.deltas,
        ),
    )


def create_app(node: NodeView) -> FastAPI:
    app = FastAPI(
        title="tapescan",
        version=__version__,
        description="Real-time US equities scanner.",
        openapi_url="/openapi.json",
    )

    @app.get(
        "/api/v1/health",
        response_model=Health,
        responses={503: {"description": "The feed has failed", "model": Health}},
    )
    async def health() -> JSONResponse:
        """Liveness and feed state: 200 while the process works, 503 when its feed failed."""
        report = health_of(node)
        return JSONResponse(
            report.model_dump(), status_code=503 if report.status == "failed" else 200
        )

    return app

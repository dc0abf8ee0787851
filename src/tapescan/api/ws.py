"""WebSocket ``/ws``: subscribe / unsubscribe / resync / ping, then snapshots and deltas."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from tapescan.api import json_limits
from tapescan.api.socket_queue import unsent_bytes
from tapescan.api.ws_transport import TRANSPORT_EXTENSION
from tapescan.publish.frames import PONG, Frame, WireFormat, error_frame
from tapescan.publish.hub import ClientSession, Hub

MAX_CLIENT_FRAME_BYTES = 64 * 1024
_json = msgspec.json.Decoder()
_msgpack = msgspec.msgpack.Decoder()


class BadRequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _decode(data: bytes | str, wire: WireFormat) -> dict[str, Any]:
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_CLIENT_FRAME_BYTES:
        raise BadRequestError(
            "frame_too_large", f"frames are limited to {MAX_CLIENT_FRAME_BYTES} bytes"
        )
    try:
        if wire is WireFormat.MSGPACK and isinstance(data, bytes):
            decoded = _msgpack.decode(raw)  # C code: a deep frame raises RecursionError cleanly
        else:
            json_limits.check_depth(raw)
            decoded = _json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, json_limits.BadJsonError):
        raise BadRequestError(
            "bad_json", 'a frame must be one JSON object, e.g. {"op":"ping"}'
        ) from None
    if not isinstance(decoded, dict):
        raise BadRequestError("bad_json", 'a frame must be one JSON object, e.g. {"op":"ping"}')
    return decoded


def _scan_list(request: dict[str, Any], known: list[str]) -> list[str]:
    scans = request.get("scans")
    if not isinstance(scans, list) or not all(isinstance(s, str) for s in scans) or not scans:
        raise BadRequestError(
            "bad_request", "'scans' must be a non-empty list of scan ids, or [\"*\"]"
        )
    return known if scans == ["*"] else list(dict.fromkeys(scans))


def handle(request: dict[str, Any], client: ClientSession, hub: Hub, known: list[str]) -> None:
    op = request.get("op")
    if op == "ping":
        client.offer(PONG)
    elif op == "subscribe":
        hub.subscribe(client, _scan_list(request, known))
    elif op == "unsubscribe":
        removed = hub.unsubscribe(client, _scan_list(request, sorted(client.scans)))
        client.offer(Frame.of({"type": "unsubscribed", "scans": removed}))
    elif op == "resync":
        scan = request.get("scan")
        if not isinstance(scan, str):
            raise BadRequestError("bad_request", "'resync' needs 'scan': a scan id")
        frame = hub.snapshot_frame(scan)
        if frame is None:
            raise BadRequestError("unknown_scan", f"no scan '{scan}'; GET /api/v1/scans lists them")
        client.offer(frame)
    else:
        raise BadRequestError(
            "unknown_op", f"unknown op {op!r}; use subscribe, unsubscribe, resync or ping"
        )


async def _send_loop(websocket: WebSocket, client: ClientSession) -> None:
    while True:
        frame = await client.next_frame()
        data = frame.encoded(client.wire)
        if client.wire is WireFormat.JSON:
            await websocket.send_text(data.decode())
        else:
            await websocket.send_bytes(data)
        client.stats.sent_frames += 1


async def _close(websocket: WebSocket) -> None:
    with contextlib.suppress(Exception):
        await websocket.close(code=1013, reason="too far behind; reconnect")


async def serve_websocket(websocket: WebSocket, hub: Hub, known_scans: Any, status: Frame) -> None:
    """One client's connection: a reader (this coroutine) and a named sender task."""
    wire = (
        WireFormat.MSGPACK if websocket.query_params.get("format") == "msgpack" else WireFormat.JSON
    )
    await websocket.accept()
    client = hub.connect(wire)
    direct = websocket.scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
    if direct is not None:
        await direct["handshake_completed"].wait()
        transport = direct["transport"]
        client.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            client.kernel_queue = functools.partial(unsent_bytes, sock)
        report_pongs = direct.get("pongs")
        if report_pongs is not None:
            report_pongs(client.pong)
            client.pinged = True
    client.offer(status)
    # Without the transport (another ASGI server), frames go through a queue and this task.
    sender = (
        asyncio.create_task(_send_loop(websocket, client), name=f"ws-send-{client.id}")
        if direct is None
        else None
    )
    closing: list[asyncio.Task[None]] = []

    def close_lagging() -> None:
        if sender is not None:
            sender.cancel()
        closing.append(asyncio.create_task(_close(websocket), name=f"ws-close-{client.id}"))

    client.on_close(close_lagging)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text") if message.get("text") is not None else message.get("bytes")
            if data is None:
                continue
            try:
                handle(_decode(data, wire), client, hub, list(known_scans()))
            except BadRequestError as error:
                client.offer(error_frame(error.code, str(error)))
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(client)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

"""The first thing every request meets: Host and Origin checks, body limits, the admin token
before any body is read, and the security headers of every answer.

* **Host** must name this server: localhost, an IP address (a DNS-rebinding attack needs a name
  of the attacker's), the bound host or one of ``allowed_hosts``, with the bound port or none.
  Anything else gets 421 (HTTP) or a refused handshake (WebSocket).
* **Origin** of a WebSocket handshake must be the page's own origin or one of ``cors_origins``;
  clients that send no Origin (not browsers) are let in.
* **Bodies** are read here, whole, before the app sees them: at most ``http_max_body_bytes``
  (413 beyond, without reading the rest), within ``http_body_timeout_s`` (408), and a JSON body
  must be JSON within json_limits (400 ``bad_json``). Write requests under ``/api/`` must carry the
  admin token before a byte of their body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tapescan.api import json_limits
from tapescan.api.errors import ApiError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a bind


@dataclass(frozen=True, slots=True)
class GuardSettings:
    bound_host: str
    allowed_hosts: tuple[str, ...]
    cors_origins: tuple[str, ...]
    max_body_bytes: int
    body_timeout_s: float
    admin: Callable[[str | None], None]  # raises ApiError when the header is not the token


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` as (lower-case name, port), None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text_raw = value.rpartition(":")
        if not colon:
            name, port_text_raw = value, ""
        port_text = port_text_raw if colon else None
    name = name.rstrip(".")
    if not name:
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or len(port_text) > 5:
        return None
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _json_response(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": code, "message": message}).encode()


class Guard:
    def __init__(self, app: App, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings
        self._names = {n.lower().rstrip(".") for n in (*LOCAL_NAMES, *settings.allowed_hosts)}
        if settings.bound_host.lower() not in WILDCARDS:
            self._names.add(settings.bound_host.lower().strip("[]"))
        self._any_host = "*" in settings.allowed_hosts
        self._proxied = {n.lower().rstrip(".") for n in settings.allowed_hosts}
        self._origins = {o.rstrip("/").lower() for o in settings.cors_origins}

    # ------------------------------------------------------------------ checks

    def host_problem(self, scope: Scope) -> str | None:
        """Why the Host header does not name this server (None: it does)."""
        if self._any_host:
            return None
        raw = _header(scope, b"host")
        if raw is None:
            return "the request has no Host header"
        parsed = _split_host(raw)
        if parsed is None:
            return f"Host {raw[:100]!r} is malformed"
        name, port = parsed
        server = scope.get("server")
        bound_port = server[1] if server else None
        if name in self._names or _is_ip(name):
            if name in self._proxied:
                return None  # behind a proxy the port may differ
            if port is None or port == bound_port:  # no port: the client's own business
                return None
            return f"Host {raw[:100]!r} names another port than this server's ({bound_port})"
        return (
            f"Host {raw[:100]!r} is not this server; add it to allowed_hosts "
            "(TAPESCAN_ALLOWED_HOSTS) if it should be"
        )

    def origin_allowed(self, scope: Scope) -> bool:
        origin = _header(scope, b"origin")
        if origin is None:
            return True  # not a browser
        origin = origin.strip().rstrip("/").lower()
        if origin in self._origins or "*" in self._origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https"):
            return False
        default = 80 if parts.scheme == "http" else 443
        try:
            origin_at = (parts.hostname, parts.port or default)
        except ValueError:
            return False
        host = _split_host(_header(scope, b"host") or "")
        return host is not None and origin_at == (host[0], host[1] or default)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self.host_problem(scope)
        if problem is None and not self.origin_allowed(scope):
            problem = "this page's origin may not open the stream"
        if problem is None:
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008, "reason": problem[:120]})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        send = self._with_headers(scope, send)
        problem = self.host_problem(scope)
        if problem is not None:
            await self._answer(send, *_json_response(421, "wrong_host", problem))
            return
        try:
            body = await self._body(scope, receive)
        except ApiError as error:
            await self._answer(send, *_json_response(error.status, error.code, str(error)))
            return
        if body is None:
            await self.app(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body (None for a request that has none to read), checked."""
        method = scope.get("method", "GET")
        path: str = scope.get("path", "")
        if method in WRITE_METHODS and path.startswith("/api/"):
            try:
                self.settings.admin(_header(scope, b"authorization"))
            except ApiError:
                await self._discard_small_body(scope, receive)
                raise
        length_text = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        if length_text is None and not chunked:
            return None
        limit = self.settings.max_body_bytes
        if length_text is not None:
            if not length_text.strip().isdigit():
                raise ApiError(400, "bad_request", "Content-Length is not a number")
            if int(length_text) > limit:
                raise ApiError(
                    413, "body_too_large", f"request bodies are limited to {limit} bytes"
                )
        try:
            body = await asyncio.wait_for(self._read(receive, limit), self.settings.body_timeout_s)
        except TimeoutError:
            raise ApiError(
                408,
                "body_timeout",
                f"the body did not arrive within {self.settings.body_timeout_s:g} s",
            ) from None
        content_type = (_header(scope, b"content-type") or "").lower()
        if body and ("json" in content_type or not content_type):
            try:
                json_limits.loads(body)
            except json_limits.BadJsonError as error:
                raise ApiError(400, "bad_json", f"the body is not usable JSON: {error}") from None
        return body

    async def _discard_small_body(self, scope: Scope, receive: Receive) -> None:
        """Read and drop a refused request's body when it announced at most the cap (bounded by
        the cap and the body timeout), so the answer does not race a reset of the connection
        (a server that closes with unread bytes resets it); a larger one is never read."""
        length_text = _header(scope, b"content-length") or ""
        if not length_text.strip().isdigit() or int(length_text) > self.settings.max_body_bytes:
            return
        with contextlib.suppress(ApiError, TimeoutError):
            await asyncio.wait_for(
                self._read(receive, self.settings.max_body_bytes), self.settings.body_timeout_s
            )

    @staticmethod
    async def _read(receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "disconnected", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, "body_too_large", f"request bodies are limited to {limit} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _answer(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        host = (_header(scope, b"host") or "").strip()
        extra = security_headers(host if self.host_problem(scope) is None else "")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {bytes(k).lower() for k, _ in message.get("headers", ())}
                message["headers"] = [
                    *message.get("headers", ()),
                    *((k, v) for k, v in extra if k not in present),
                ]
            await send(message)

        return sending


def security_headers(host: str) -> list[tuple[bytes, bytes]]:
    """Headers of every answer. The page loads only its own script and style sheet (no inline
    code, no other origin) and talks only to its own origin, over HTTP and WebSocket."""
    sockets = f" ws://{host} wss://{host}" if host and all(c not in host for c in " ;,'\"") else ""
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]

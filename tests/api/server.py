"""A real `tapescan run` on a free 127.0.0.1 port, for API, WebSocket and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self,
        workdir: Path,
        *args: str,
        token: str | None = ADMIN_TOKEN,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        env.pop("TAPESCAN_ADMIN_TOKEN", None)
        if token is not None:
            env["TAPESCAN_ADMIN_TOKEN"] = token
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tapescan", "run", "--port", str(self.port), *args],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def health(
        self, until: Callable[[dict[str, Any]], bool], timeout_s: float = 90
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tapescan exited early: {self.process.communicate()[1]}")
            try:
                body: dict[str, Any] = httpx.get(f"{self.url}/api/v1/health", timeout=2).json()
                if until(body):
                    return body
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # another process is starting; nothing here to await
        raise AssertionError("tapescan did not become ready in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
        elif self.process.stderr is not None and not self.process.stderr.closed:
            self.process.communicate()  # exited (or was killed): close its pipe


def start_server(workdir: Path, *args: str, token: str | None = ADMIN_TOKEN) -> Server:
    server = Server(
        workdir,
        "--symbols",
        "800",
        "--start",
        "2026-11-24T10:00:00-05:00",
        "--speed",
        "5",
        *args,
        token=token,
    )
    try:
        server.health(lambda h: h["scans"]["cycles"] >= 1)
    except AssertionError:
        server.stop()
        raise
    return server

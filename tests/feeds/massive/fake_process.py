"""`tapescan fake-massive` as a subprocess on free 127.0.0.1 ports, for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

KEY = "fake-key-for-tests"
START = "2026-11-24T15:00:00+00:00"  # 10:00 ET on a regular session


class FakeProcess:
    def __init__(self, workdir: Path, *args: str, symbols: int = 300) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = workdir / f"fake-massive-{id(self)}.log"  # a file: a full pipe cannot block it
        with self.log.open("w") as log:
            self.process = self._start(workdir, env, log, symbols, args)
        self.settings: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while "TAPESCAN_MASSIVE_REST_URL" not in self.settings:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"fake-massive did not start: {self.log.read_text()}")
            time.sleep(0.05)  # another process draws its history; nothing here to await
            for line in self.log.read_text().splitlines():
                name, _, value = line.strip().partition("=")
                if name.startswith(("MASSIVE_", "TAPESCAN_")):
                    self.settings[name] = value

    @staticmethod
    def _start(
        workdir: Path, env: dict[str, str], log: IO[str], symbols: int, args: tuple[str, ...]
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tapescan",
                "fake-massive",
                "--port",
                "0",
                "--rest-port",
                "0",
                "--key",
                KEY,
                "--symbols",
                str(symbols),
                "--start",
                START,
                *args,
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )

    @property
    def rest_url(self) -> str:
        return self.settings["TAPESCAN_MASSIVE_REST_URL"]

    def env(self, key: str = KEY) -> dict[str, str]:
        return {
            "MASSIVE_API_KEY": key,
            "TAPESCAN_MASSIVE_WS_URL": self.settings["TAPESCAN_MASSIVE_WS_URL"],
            "TAPESCAN_MASSIVE_REST_URL": self.rest_url,
        }

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.rest_url + path, headers={"Authorization": f"Bearer {KEY}"})

    def now(self) -> str:
        """The fake's clock (its market status ``serverTime``): a run started at it is in step."""
        return str(self.get("/v1/marketstatus/now").json()["serverTime"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

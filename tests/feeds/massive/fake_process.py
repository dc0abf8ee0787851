"""`tapescan fake-massive` as a subprocess on free 127.0.0.1 ports, for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

KEY = "fake-key-for-tests"
START = "2026-11-24T15:00:00+00:00"  # 10:00 ET on a regular session


class FakeProcess:
    def __init__(self, workdir: Path, *args: str, symbols: int = 300) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("MASSIVE_API_KEY", None)
        self.process = subprocess.Popen(
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
            stderr=subprocess.PIPE,
            text=True,
        )
        self.settings: dict[str, str] = {}
        assert self.process.stderr is not None
        for line in self.process.stderr:  # the lines it prints once it serves
            name, _, value = line.strip().partition("=")
            if name.startswith(("MASSIVE_", "TAPESCAN_")):
                self.settings[name] = value
            if name == "TAPESCAN_MASSIVE_REST_URL":
                break
        if "TAPESCAN_MASSIVE_REST_URL" not in self.settings:
            self.stop()
            raise AssertionError("fake-massive did not start")

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
        if self.process.stderr is not None:
            self.process.stderr.close()

"""`tapescan bench ingest --feed massive`: every event over the socket reaches the state."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
BENCH_INGEST = (sys.executable, "-m", "tapescan", "bench", "ingest")


def test_the_massive_path_applies_every_event_sent_through_the_socket() -> None:
    done = subprocess.run(
        [
            *BENCH_INGEST,
            "--feed",
            "massive",
            "--symbols",
            "200",
            "--seconds",
            "20",
            "--repeats",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["feed"] == "massive"
    assert "MassiveFeed.events" in report["inputs"]["path"]
    assert report["inputs"]["events"] > 1_000
    rates = report["events_per_second"]
    assert 0 < rates["min"] <= rates["median"] <= rates["max"]
    assert report["events_per_cpu_second"]["median"] > 0
    assert "repeat 2 of 2" in done.stderr


def test_frames_per_read_is_refused_with_the_socket_path() -> None:
    done = subprocess.run(
        [*BENCH_INGEST, "--feed", "massive", "--frames-per-read", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--frames-per-read is for --feed frames" in done.stderr

import json
import subprocess
import sys


def test_a_day_replayed_flat_out_keeps_rss_flat_from_1000_to_1600() -> None:
    # A process of its own: RSS of the shared test process would carry every other test's heap.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapescan",
            "bench",
            "memory",
            "--symbols",
            "1500",
            "--seed",
            "3",
            "--session",
            "2026-11-20",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(result.stdout)
    rss = report["rss_mb"]
    assert set(rss) >= {"10:00", "16:00", "20:00"}
    assert abs(report["growth_10_to_16_mb"]) <= 5.0, rss
    assert rss["20:00"] - rss["10:00"] <= 5.0, rss

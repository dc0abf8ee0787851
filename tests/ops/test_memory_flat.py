import datetime as dt

from tapescan.market.calendar import market_calendar
from tapescan.ops.bench import bench_memory


def test_a_day_replayed_flat_out_keeps_rss_flat_from_1000_to_1600() -> None:
    report = bench_memory(1_500, 3, dt.date(2026, 11, 20), market_calendar(), lambda _: None)
    rss = report["rss_mb"]
    assert set(rss) >= {"10:00", "16:00", "20:00"}
    assert abs(report["growth_10_to_16_mb"]) <= 5.0, rss
    assert rss["20:00"] - rss["10:00"] <= 5.0, rss

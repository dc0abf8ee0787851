import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.indicators.catalog import BY_NAME, NUMERIC_COLUMNS, Kind
from tapescan.scan.definition import ScanDefinition, parse_scan
from tapescan.scan.delta import Snapshot, apply
from tapescan.scan.engine import CompiledScan, ScanEngine
from tapescan.scan.library import builtin_scans
from tapescan.scan.tracker import ScanTracker

N = 300


def random_columns(rng: np.random.Generator) -> dict[str, np.ndarray]:
    columns = {}
    for name in NUMERIC_COLUMNS:
        values = np.round(rng.normal(0, 10, N), 1)  # coarse values make ties likely
        if BY_NAME[name].kind is Kind.COUNT:
            values = np.round(np.abs(values) * 20_000)
        if BY_NAME[name].kind is Kind.FLAG:
            values = (rng.random(N) < 0.1).astype(np.float64)
        values[rng.random(N) < 0.1] = np.nan
        columns[name] = values
    columns["price"] = np.abs(columns["price"])
    return columns


def text_columns() -> dict[str, np.ndarray]:
    symbols = np.array([f"T{(i * 7919) % 1000:03d}" for i in range(N)])
    return {
        "symbol": symbols,
        "name": np.array([f"{s} Inc." for s in symbols]),
        "exchange": np.array(["XNAS", "XNYS"] * (N // 2)),
        "sector": np.array(["Energy", "Utilities", "Technology"] * (N // 3)),
    }


def reference_rows(
    scan: ScanDefinition, columns: dict[str, np.ndarray], text: dict[str, np.ndarray]
) -> list[int]:
    """The scan evaluated symbol by symbol in plain Python."""
    chosen = []
    for i in range(N):
        ok = not math.isnan(columns[scan.sort.field][i])
        for f in scan.filters:
            target: Any = f.value
            if BY_NAME[f.field].kind is Kind.TEXT:
                value = text[f.field][i]
                ok &= value in target if f.op == "in" else (value == target) == (f.op == "==")
                continue
            v = columns[f.field][i]
            if math.isnan(v):
                ok = False
            elif f.op == "between":
                ok &= target[0] <= v <= target[1]
            elif f.op == "in":
                ok &= v in target
            else:
                ok &= {
                    ">": v > target,
                    ">=": v >= target,
                    "<": v < target,
                    "<=": v <= target,
                    "==": v == target,
                    "!=": v != target,
                }[f.op]
        if ok:
            chosen.append(i)
    sign = 1 if scan.sort.direction == "asc" else -1
    chosen.sort(key=lambda i: (sign * columns[scan.sort.field][i], text["symbol"][i]))
    return chosen[: scan.limit]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31),
    st.floats(-5, 5),
    st.sampled_from([">", ">=", "<", "<=", "!=", "=="]),
    st.integers(1, 60),
)
def test_compiled_scans_equal_a_symbol_by_symbol_reference(
    seed: int, threshold: float, op: str, limit: int
) -> None:
    rng = np.random.default_rng(seed)
    columns, text = random_columns(rng), text_columns()
    scans = [
        *builtin_scans(),
        parse_scan(
            {
                "id": "custom",
                "limit": limit,
                "sort": {"field": "chg_5m_pct", "direction": "asc"},
                "filters": [
                    {"field": "change_pct", "op": op, "value": round(threshold, 1)},
                    {"field": "exchange", "op": "in", "value": ["XNAS"]},
                    {"field": "sector", "op": "!=", "value": "Energy"},
                    {"field": "price", "op": "between", "value": [1, 15]},
                ],
            }
        ),
    ]
    engine = ScanEngine(scans, text)
    results = engine.evaluate(columns, "regular")
    for scan in scans:
        expected = reference_rows(scan, columns, text) if "regular" in scan.sessions else []
        assert results[scan.id].rows.tolist() == expected, scan.id


def test_a_scan_outside_its_sessions_is_inactive_and_empty() -> None:
    rng = np.random.default_rng(1)
    engine = ScanEngine(builtin_scans(), text_columns())
    results = engine.evaluate(random_columns(rng), "pre")
    assert not results["new_highs"].active
    assert len(results["new_highs"].rows) == 0
    assert results["premarket_movers"].active


def wire_snapshot(scan: CompiledScan, columns: dict[str, np.ndarray], seq: int) -> Snapshot:
    result = scan.evaluate(columns, "regular")
    rows = tuple(tuple(row) for row in scan.wire_rows(result))
    return Snapshot(scan.definition.id, seq, 0, scan.definition.columns, rows)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 12))
def test_snapshot_plus_deltas_equals_a_fresh_snapshot_at_the_same_seq(
    seed: int, cycles: int
) -> None:
    rng = np.random.default_rng(seed)
    columns, text = random_columns(rng), text_columns()
    engine = ScanEngine(builtin_scans(), text)
    trackers = {scan_id: ScanTracker(scan) for scan_id, scan in engine.scans.items()}
    clients: dict[str, Snapshot] = {}
    for cycle in range(cycles):
        for scan_id, result in engine.evaluate(columns, "regular").items():
            delta = trackers[scan_id].update(result, cycle)
            if scan_id not in clients:
                clients[scan_id] = trackers[scan_id].snapshot()
            elif delta is not None:
                clients[scan_id] = apply(clients[scan_id], delta)
            fresh = wire_snapshot(engine.scans[scan_id], columns, trackers[scan_id].seq)
            assert clients[scan_id].rows == fresh.rows
            assert clients[scan_id].seq == fresh.seq
        # Move a random part of the market a little: values change, rows enter and leave.
        for name in ("change_pct", "chg_5m_pct", "gap_pct", "rvol", "volume", "price"):
            moved = rng.random(N) < 0.2
            columns[name] = np.where(
                moved, columns[name] + np.round(rng.normal(0, 1, N), 3), columns[name]
            )


def test_a_value_change_below_display_precision_sends_nothing() -> None:
    rng = np.random.default_rng(5)
    columns, text = random_columns(rng), text_columns()
    engine = ScanEngine(builtin_scans(), text)
    tracker = ScanTracker(engine.scans["top_gainers"])
    tracker.update(engine.evaluate(columns, "regular")["top_gainers"], 0)
    columns["change_pct"] = columns["change_pct"] + 0.0001
    assert tracker.update(engine.evaluate(columns, "regular")["top_gainers"], 1) is None
    assert tracker.seq == 1

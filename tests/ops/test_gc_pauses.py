from __future__ import annotations

import gc

from tapescan.ops.gc_pauses import GcPauses


def _cycles(count: int) -> list[list[object]]:
    made: list[list[object]] = []
    for _ in range(count):
        pair: list[object] = []
        pair.append(pair)  # a reference cycle only the collector frees
        made.append(pair)
    return made


def test_times_every_collection_by_generation() -> None:
    pauses = GcPauses()
    pauses.install()
    try:
        garbage = _cycles(300_000)  # enough tracked objects that a full pass takes over 1 ms
        del garbage
        gc.collect(2)
        gc.collect(0)
    finally:
        pauses.uninstall()
    assert pauses.collections[2] >= 1
    assert pauses.collections[0] >= 1
    assert pauses.total_ns[2] > 0
    assert pauses.max_ns[2] <= pauses.total_ns[2]
    full = [p for p in pauses.recent if p.generation == 2]
    assert full, "a full collection of 300,000 cycles should take at least 1 ms"
    assert max(p.collected for p in full) >= 300_000
    summary = pauses.summary()
    assert summary["collections"] == pauses.collections
    assert summary["long_pauses"][-1]["ms"] >= 1.0


def test_uninstall_stops_counting() -> None:
    pauses = GcPauses()
    pauses.install()
    pauses.install()  # once only
    assert gc.callbacks.count(pauses._callback) == 1
    pauses.uninstall()
    gc.collect()
    assert pauses.collections == [0, 0, 0]
    assert pauses._callback not in gc.callbacks

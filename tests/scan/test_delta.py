import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.scan.delta import Row, SequenceGapError, Snapshot, apply, diff

SYMBOLS = [f"S{i}" for i in range(12)]


@st.composite
def results(draw: st.DrawFn) -> tuple[Row, ...]:
    """A ranked result: distinct symbols with a couple of small-valued columns."""
    chosen = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=8))
    return tuple(
        (s, draw(st.sampled_from([None, 1.0, 1.5, 2.25])), draw(st.integers(0, 3))) for s in chosen
    )


@settings(max_examples=300)
@given(st.lists(results(), min_size=1, max_size=6))
def test_applying_each_diff_rebuilds_every_next_result(chain: list[tuple[Row, ...]]) -> None:
    client = Snapshot("scan", 0, 0, ("symbol", "a", "b"), ())
    server = client
    for step, rows in enumerate(chain, start=1):
        delta = diff(server, rows, asof_ns=step)
        server = Snapshot("scan", delta.seq, step, server.columns, tuple(rows))
        client = apply(client, delta)
        assert client == server


def test_an_unchanged_result_gives_an_empty_delta() -> None:
    snapshot = Snapshot("scan", 3, 0, ("symbol", "a"), (("A", 1.0), ("B", 2.0)))
    delta = diff(snapshot, [("A", 1.0), ("B", 2.0)], 1)
    assert delta.empty


def test_a_delta_for_another_sequence_is_refused() -> None:
    snapshot = Snapshot("scan", 3, 0, ("symbol",), (("A",),))
    delta = diff(Snapshot("scan", 4, 0, ("symbol",), ()), [("B",)], 1)
    with pytest.raises(SequenceGapError):
        apply(snapshot, delta)

"""Slot-volume profiles to rows and back, as the store holds them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from tapescan.model import Universe
from tapescan.store.records import slot_volume_matrix, slot_volume_rows

DAY = dt.date(2026, 11, 24)


def test_profiles_come_back_exactly_from_sliced_and_chunked_rows() -> None:
    rng = np.random.default_rng(3)
    universe = Universe([f"S{i}" for i in range(50)])
    profiles = rng.integers(0, 2**32, (50, 192), dtype=np.uint64).astype(np.uint32)
    profiles[7] = 0  # never traded: no row
    rows = slot_volume_rows(DAY, universe, profiles)
    assert rows.num_rows == 49
    # as a store may hand them back: several chunks, the first one sliced
    pieces = pa.concat_tables([rows.slice(0, 20), rows.slice(20, 9), rows.slice(29)])
    assert np.array_equal(slot_volume_matrix(pieces, universe), profiles)
    other = Universe(["S3", "NEW", *[f"S{i}" for i in range(10, 50)]])  # one known no more
    matrix = slot_volume_matrix(pieces, other)
    assert np.array_equal(matrix[0], profiles[3])
    assert not matrix[1].any()
    assert np.array_equal(matrix[2:], profiles[10:])
    assert not slot_volume_matrix(rows.slice(0, 0), universe).any()


def test_a_profile_of_the_wrong_length_is_an_error() -> None:
    universe = Universe(["A", "B"])
    rows = pa.table(
        {
            "session": pa.array([DAY, DAY], pa.date32()),
            "symbol": ["A", "B"],
            "volume": pa.array([bytes(768), bytes(764)], pa.binary()),
        }
    )
    with pytest.raises(ValueError, match="192"):
        slot_volume_matrix(rows, universe)

"""Warm-ups gathered into whole tables, for tests that look at all of one."""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tapescan.feeds.history import Warmup


def gathered(warmup: Warmup) -> tuple[pa.Table, dict[dt.date, npt.NDArray[np.uint32]]]:
    """Every session's daily bars in one table, and slot volume by date."""
    items = list(warmup.sessions)
    daily = pa.concat_tables([item.daily for item in items]) if items else pa.table({})
    slots = {item.date: item.slot_volume for item in items if item.slot_volume is not None}
    return daily, slots

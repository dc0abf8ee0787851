"""Market state: one row per symbol in fixed numpy columns."""

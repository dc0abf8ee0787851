"""Scans as data: definitions, validation, engine and deltas."""

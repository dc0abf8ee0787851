"""Indicators: exact, vectorized definitions (docs/design.md, section 4)."""

"""Indicators: exact, vectorized definitions (DESIGN.md section 4)."""

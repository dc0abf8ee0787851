"""tapescan: a real-time scanner for US equities."""

__version__ = "0.1.0"

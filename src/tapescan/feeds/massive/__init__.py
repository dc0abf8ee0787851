"""The live Massive (formerly Polygon.io) feed: its pure frame parser and session rules (the
socket shell that carries out the rules is not built yet)."""

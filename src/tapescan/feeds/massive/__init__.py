"""The live Massive (formerly Polygon.io) feed: frame parser, session rules, asyncio client and
a local fake server (not yet wired into ``tapescan run``; docs/live.md)."""

"""The live Massive (formerly Polygon.io) feed: pure parser now, socket shell later."""

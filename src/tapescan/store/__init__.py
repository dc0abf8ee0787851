"""History: what is recorded, the stores that hold it, retention, archive and time travel."""

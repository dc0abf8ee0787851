"""Publishing scan results: frames encoded once, fanned out to bounded client queues."""

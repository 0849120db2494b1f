"""Data: the transaction simulator, the landing zone and the write–audit–publish ingest."""

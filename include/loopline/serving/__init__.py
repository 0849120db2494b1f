"""Loopline's prediction service: the predictor, the registry-reconciled router, the durable log, the API."""

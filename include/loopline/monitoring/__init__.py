"""Drift monitoring: the champion's reference sample vs the serving window, and the retrain trigger.

``config`` (the use case's drift.yaml) · ``reference`` (the sample the trainer logs) · ``fast_drift``
(Evidently's pinned methods, vectorised) · ``decide`` (``DriftVerdict``, ``should_retrain``) · ``reports``
(Evidently HTML/JSON, MLflow) · ``monitor`` (``run_check``: the I/O shell the DAG calls).
"""

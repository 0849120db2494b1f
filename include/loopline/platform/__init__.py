"""The platform layer: the local stack (``loopline up/down``), Airflow's REST API, smoke checks."""

"""Airflow-aware glue for Loopline: assets, default args, operator factories and the UI plugin.

Kept apart from ``include/loopline`` (which imports no Airflow) and light to import: DAG files import
from here at parse time.
"""

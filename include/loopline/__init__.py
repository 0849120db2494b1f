"""Loopline: an Airflow-orchestrated MLOps platform that runs the model lifecycle as one closed loop.

The domain package imports no Airflow: DAGs in ``dags/`` and the glue in ``plugins/loopline_airflow``
call into it, and the same entry points run in an Airflow worker, a trainer pod or the serving image.
"""

__version__ = "0.1.0"

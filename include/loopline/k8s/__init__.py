"""Kubernetes for Loopline: the versioned pod settings, pure manifest builders, and ``loopline k8s``.

Imports no Airflow and no Kubernetes client: the Airflow glue (KubernetesPodOperator) lives in
``plugins/loopline_airflow``.
"""

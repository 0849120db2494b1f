"""Lineage: the model loop's decision history (and, later, links between data, runs and versions)."""

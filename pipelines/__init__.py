"""Prefect flows over the DVC stages: wiring only."""

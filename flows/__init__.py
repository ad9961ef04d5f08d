"""Prefect flows: the pipeline (one micro-batch per run)."""

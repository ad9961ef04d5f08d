"""Prefect flows of the pipeline: one micro-batch per run, in one pool or split per stage."""

"""Prefect tasks: thin wrappers that add retries, timeouts and logging to core steps."""

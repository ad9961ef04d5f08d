"""Which log lines of a run reach the Prefect API (`monitor.api_log_level`).

Every line a run logs at or above the level is a request to the server and a row in its
database; below it, a line still goes to the process's own output (journal, console). A
warm worker and its slots apply the level once, at start, to Prefect's API handlers, and
export it so a later logging setup in the process keeps it.
"""

from __future__ import annotations

import logging
import os

# Prefect's logging settings read overrides from PREFECT_LOGGING_<PATH>: these are the level
# of its `api` handler (flow and task run loggers) and of its `worker_api` handler.
API_LEVEL_VARIABLES = (
    "PREFECT_LOGGING_HANDLERS_API_LEVEL",
    "PREFECT_LOGGING_HANDLERS_WORKER_API_LEVEL",
)


def limit_api_logs(level: str) -> int:
    """Send only lines at `level` or above to the Prefect API from this process; returns
    how many handlers were set (0 before Prefect's logging is set up: the variables then
    set it)."""
    from prefect.logging.handlers import APILogHandler

    for name in API_LEVEL_VARIABLES:
        os.environ[name] = level
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    changed = 0
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, APILogHandler):
                handler.setLevel(level)
                changed += 1
    return changed

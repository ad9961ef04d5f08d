"""How long the Prefect server keeps what the pipeline records.

Environment: `IMG2IMG_RETENTION__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


def _iso(days: float) -> str:
    """A duration as Prefect's settings read it (ISO 8601, in whole seconds)."""
    return f"PT{round(days * 86_400)}S"


class RetentionSettings(BaseModel):
    """How long the Prefect server keeps what the pipeline records. Prefect's own database
    vacuum does the deleting (flow runs with their task runs and states, their logs and
    artifacts, orphans, events); these settings turn it on and size it. The outcomes
    themselves (results and failure records in S3) are not touched."""

    runs_days: float = Field(
        14.0,
        gt=1 / 24,
        le=3650,
        description="Finished flow runs (with their task runs, states, logs and artifacts) "
        "are deleted this long after they ended; Prefect wants more than an hour.",
    )
    events_days: float = Field(
        2.0,
        gt=0,
        le=3650,
        description="Events are deleted this long after they happened. Nothing here reads "
        "an event older than minutes (the fleet view reads its window, the autoscaler and "
        "alerts the latest); they are most of the database's growth per run.",
    )
    vacuum_interval_s: float = Field(
        3600.0, ge=1, le=86_400, description="How often the vacuum looks for old runs and events."
    )
    orphans_interval_s: float = Field(
        86_400.0,
        ge=1,
        le=7 * 86_400,
        description="How often it scans for logs and artifacts left by deleted runs (a full "
        "scan of those tables).",
    )


def prefect_server_env(retention: RetentionSettings) -> dict[str, str]:
    """The Prefect server's settings (environment variables) that apply `retention`: its
    database vacuum does the deleting."""
    return {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs,orphans",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(
            round(retention.runs_days * 86_400)
        ),
        "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": str(retention.vacuum_interval_s),
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ORPHAN_CLEANUP_LOOP_SECONDS": str(
            retention.orphans_interval_s
        ),
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": _iso(retention.events_days),
    }

"""`img2img reconcile`: uploads with no outcome and no live run, created again on request.

Run by hand after an incident, and periodically by the recovery service. Resubmitting is
idempotent: an upload with a live run is never listed, and a batch's run is created with a
key derived from its uploads, so two reconcilers (or one run twice) create one run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deployments.services.pool_runs import pool_runs
from img2img.config.settings import Settings
from img2img.delivery.reconcile import list_uploads, outcome_stems, without_outcome
from img2img.intake.batching import run_name
from img2img.intake.events import ObjectRef
from img2img.intake.idempotency import reconcile_key
from img2img.intake.keys import outcome_stem
from img2img.pipeline.topology import dispatch_target, pools

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from prefect.client.orchestration import SyncPrefectClient

log = logging.getLogger("img2img.reconcile")

LIVE_STATES = ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"]


def held_older_than_s(
    now: float, clear_at: float | None, older_than_s: float, hold_max_s: float
) -> float:
    """The age below which the periodic reconcile leaves an upload to the event path.

    `clear_at`: when the ingest queue was last seen with no message in flight (None: not
    since the service started). An upload made after that may be held by a dispatcher (a
    backlog it holds for tenants' turns, its messages in flight), so it is left for as long
    as that lasts, at most `hold_max_s`; never less than `older_than_s`. Messages no one
    receives are not in flight: with no dispatcher, the reconcile is not held back."""
    if clear_at is None:
        return max(older_than_s, hold_max_s)
    return max(older_than_s, min(now - clear_at, hold_max_s))


class IntakeWatch:
    """When the ingest queue was last seen with no message in flight (one request a look)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self.clear_at: float | None = None

    def look(self, now: float) -> int | None:
        """Messages in flight now (None: not known, and `clear_at` left as it was)."""
        try:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
        except Exception as exc:  # advisory: the last known instant stands
            log.warning("could not read the ingest queue's messages in flight: %s", exc)
            return None
        flying = int(attrs["ApproximateNumberOfMessagesNotVisible"])
        if flying == 0:
            self.clear_at = now
        return flying


@dataclass
class ReconcileReport:
    buckets: list[str]
    prefix: str
    uploads: int = 0
    with_outcome: int = 0
    live: int = 0
    missing: list[str] = field(default_factory=list)
    resubmitted_runs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "buckets": self.buckets,
            "prefix": self.prefix,
            "uploads": self.uploads,
            "with_outcome": self.with_outcome,
            "live": self.live,
            "missing": len(self.missing),
            "missing_keys": self.missing[:100],
            "resubmitted_runs": self.resubmitted_runs,
        }


def live_stems(prefect: SyncPrefectClient, pool: str) -> set[str]:
    """Outcome stems of the uploads that a not-yet-finished run of `pool` holds."""
    return {
        outcome_stem(ObjectRef.model_validate(obj))
        for run in pool_runs(prefect, pool, LIVE_STATES)
        for obj in (run.parameters or {}).get("objects", [])
    }


def reconcile(
    s3: S3Client,
    prefect: SyncPrefectClient,
    settings: Settings,
    *,
    prefix: str = "",
    older_than_s: float = 0.0,
    newer_than_s: float | None = None,
    resubmit: bool = False,
) -> ReconcileReport:
    """List (and with `resubmit`, create runs for) the uploads under `prefix` in every
    upload bucket that have no outcome and no live run."""
    storage = settings.storage
    buckets = sorted(storage.upload_buckets)
    report = ReconcileReport(buckets=buckets, prefix=prefix)
    # An upload a stage-2 run holds is as live as one in a stage-1 run.
    live: set[str] = set()
    for role in pools(settings.topology, settings.autoscaler.pool):
        live |= live_stems(prefect, role.pool)
    now = datetime.now(UTC)
    missing: list[ObjectRef] = []
    for bucket in buckets:
        uploads = list(list_uploads(s3, bucket, prefix))
        outcomes = outcome_stems(s3, storage.results_bucket, bucket, prefix)
        report.uploads += len(uploads)
        report.with_outcome += sum(1 for u in uploads if outcome_stem(u.ref) in outcomes)
        report.live += sum(1 for u in uploads if outcome_stem(u.ref) in live)
        missing += without_outcome(uploads, outcomes, live, now, older_than_s, newer_than_s)
    report.missing = [m.uri for m in missing]
    if missing:
        log.warning("%d upload(s) have no outcome and no live run", len(missing))
    if resubmit and missing:
        report.resubmitted_runs = _resubmit(prefect, settings, missing)
    return report


def _resubmit(
    prefect: SyncPrefectClient, settings: Settings, missing: list[ObjectRef]
) -> list[str]:
    deployment = prefect.read_deployment_by_name(dispatch_target(settings))
    size = settings.dispatch.max_batch
    created = []
    # Recovery work is no one waiting at a screen: with lanes, the last lane's queue (its
    # runs must not take the places and the device turns kept for interactive uploads).
    queue = None
    if settings.lanes.enabled:
        from deployments.services.lane_queues import ensure_lane_queues

        queue = settings.lanes.names()[-1]
        ensure_lane_queues(prefect, [deployment.work_pool_name or ""], settings.lanes)
    for start in range(0, len(missing), size):
        batch = missing[start : start + size]
        run = prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters={"objects": [o.as_parameter() for o in batch]},
            idempotency_key=reconcile_key(batch),
            name=run_name(batch, "reconcile"),
            tags=["reconcile"],
            work_queue_name=queue,
        )
        created.append(str(run.id))
        log.info("resubmitted %d upload(s) as flow run %s", len(batch), run.id)
    return created

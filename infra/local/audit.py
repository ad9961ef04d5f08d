"""Gathering what the exactly-once audit reads (`img2img.delivery.audit` judges it).

Used by the chaos scenarios, the tests, the demo and the benchmarks, so every `duplicated`
figure they print means the same thing. It reads:

- the versions of every outcome object under the audited uploads' buckets (one listing per
  prefix, paged): the results bucket keeps versions (the AWS template's and the local
  stack's), so a second write shows as a second version;
- the versions of the stage outputs in the stage bucket, where it keeps them (the local
  stack's and the tests' do; a real directory bucket has no versions): how many times each
  stage's device work ran for an upload;
- the completion messages on the app's queue, drained by `drain_messages` (the audit is
  then that queue's consumer) or handed over by a caller that consumed them itself;
- optionally the flow runs of the pipeline's pools (read by the caller), for how many runs
  held each upload.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from img2img.delivery.audit import AuditReport, Evidence, judge, message_owner
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from prefect.client.schemas.objects import FlowRun

    from img2img.config.settings import Settings

STAGES = ("generate", "upscale")


def versions_under(s3: S3Client, bucket: str, prefix: str) -> Counter[str]:
    """How many versions each key under `prefix` has (delete markers left out). On a bucket
    without versioning every present key counts once."""
    found: Counter[str] = Counter()
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:  # bounded by the number of versions under the prefix
        page = s3.list_object_versions(**kwargs)
        for version in page.get("Versions", []):
            found[version["Key"]] += 1
        if not page.get("IsTruncated"):
            return found
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        if page.get("NextVersionIdMarker"):
            kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]


def stage_versions_kept(s3: S3Client, stage_bucket: str) -> bool:
    """Whether the stage bucket keeps versions, so stage outputs count device runs."""
    try:
        return s3.get_bucket_versioning(Bucket=stage_bucket).get("Status") == "Enabled"
    except Exception:  # a directory bucket answers with an error: no versions there
        return False


def drain_messages(
    sqs: SQSClient,
    queue_url: str,
    refs: Sequence[ObjectRef],
    quiet_s: float = 3.0,
    limit_s: float = 120.0,
) -> list[dict[str, Any]]:
    """Every completion message on the app's queue (deleted as read), until each of `refs`
    has at least one and the queue then stays empty for `quiet_s` (a repeat sent late still
    counts), or `limit_s` passed."""
    found: list[dict[str, Any]] = []
    heard: set[str] = set()
    wanted = {ref.identity for ref in refs}
    deadline = time.monotonic() + limit_s
    quiet_until = time.monotonic() + quiet_s
    while time.monotonic() < deadline and (time.monotonic() < quiet_until or heard < wanted):
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in got.get("Messages", []):
            body = json.loads(message["Body"])
            found.append(body)
            owner = message_owner(body, refs)
            if owner is not None:
                heard.add(owner.identity)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            quiet_until = time.monotonic() + quiet_s
    return found


def runs_per_upload(runs: Iterable[FlowRun]) -> Counter[str]:
    """How many of `runs` held each upload (in their `objects` parameter), by identity."""
    held: Counter[str] = Counter()
    for run in runs:
        objects = (run.parameters or {}).get("objects") or []
        for identity in {ObjectRef.model_validate(o).identity for o in objects}:
            held[identity] += 1
    return held


def audit(
    s3: S3Client,
    results_bucket: str,
    refs: Sequence[ObjectRef],
    messages: Iterable[Mapping[str, Any]] | None = None,
    stage_bucket: str | None = None,
    runs: Mapping[str, int] | None = None,
) -> AuditReport:
    """The audit of `refs`.

    Args:
        messages: every completion message received (None: messages are off, and none is
            expected).
        stage_bucket: count device runs from its stage outputs' versions, when it keeps them.
        runs: flow runs per upload identity (`runs_per_upload`), when read.
    """
    prefixes = sorted({p for ref in refs for p in _outcome_prefixes(ref)})
    versions: Counter[str] = Counter()
    for prefix in prefixes:
        versions.update(versions_under(s3, results_bucket, prefix))
    stage_counts: Counter[str] | None = None
    if stage_bucket is not None and stage_versions_kept(s3, stage_bucket):
        stage_counts = Counter()
        for prefix in sorted({f"{s}/{ref.bucket}/" for ref in refs for s in STAGES}):
            stage_counts.update(versions_under(s3, stage_bucket, prefix))
    by_upload: dict[str, list[Mapping[str, Any]]] = {ref.identity: [] for ref in refs}
    stray = 0
    for message in messages or ():
        owner = message_owner(message, refs)
        if owner is None:
            stray += 1
        else:
            by_upload[owner.identity].append(message)
    verdicts = []
    for ref in refs:
        keys = keys_for(ref)
        evidence = Evidence(
            image_writes=versions[keys.result],
            result_writes=versions[keys.result_meta],
            failure_writes=versions[keys.failure],
            messages=tuple(by_upload[ref.identity]),
            stage_outputs=None
            if stage_counts is None
            else {"generate": stage_counts[keys.generate], "upscale": stage_counts[keys.upscale]},
            runs=None if runs is None else runs.get(ref.identity, 0),
        )
        verdicts.append(judge(ref, evidence, expect_messages=messages is not None))
    return AuditReport.of(verdicts, stray_messages=stray)


def audit_local_stack(
    s3: S3Client,
    sqs: SQSClient,
    settings: Settings,
    pools: Iterable[str],
    refs: Sequence[ObjectRef],
    say: Callable[[str], None],
) -> dict[str, int]:
    """The audit of `refs` on the local stack: outcome versions, stage outputs, every
    completion message on the app's queue (drained: the caller is its consumer, when the
    stack publishes to its own topic), and the runs of `pools` that held each upload; its
    first problems are said, its counts returned."""
    import os

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from deployments.services.pool_runs import pool_runs
    from infra.local.resources import APP_QUEUE, local_topic_arn

    local_topic = local_topic_arn(settings.aws.region)
    messages = None
    if os.environ.get("IMG2IMG_NOTIFY__TOPIC_ARN", local_topic) == local_topic:
        queue = sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
        messages = drain_messages(sqs, queue, refs, quiet_s=3, limit_s=60)
    states = [t.value for t in StateType]
    with get_client(sync_client=True) as client:
        runs = runs_per_upload(r for pool in pools for r in pool_runs(client, pool, states))
    storage = settings.storage
    report = audit(
        s3,
        storage.results_bucket,
        refs,
        messages=messages,
        stage_bucket=storage.stage_bucket,
        runs=runs,
    )
    for problem in report.problems[:20]:
        say(f"audit: {problem}")
    return report.counts()


def _outcome_prefixes(ref: ObjectRef) -> tuple[str, str]:
    """The folder of the upload's outcomes under results/ and failed/ (one listing serves
    every upload in it)."""
    keys = keys_for(ref)
    return keys.result.rsplit("/", 1)[0] + "/", keys.failure.rsplit("/", 1)[0] + "/"

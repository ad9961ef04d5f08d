"""The main job on the local stack: upload samples, wait for every outcome, report timings."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from img2img.aws import storage
from img2img.delivery.notify import upload_of
from img2img.dev.samples import sample_metadata, sample_png
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from img2img.observe.timing import STAGES, summarize

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@dataclass
class Outcome:
    """One upload's outcome as the demo learned it: from its completion message (`doc` is
    the message) or, with messages off, from its outcome document in S3."""

    ref: ObjectRef
    status: str = "pending"  # completed | failed | pending
    doc: dict[str, Any] = field(default_factory=dict)
    # Every completion message received for it (more than 1: a duplicate).
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return len(self.received)

    @property
    def result_uri(self) -> str:
        result = self.doc.get("result")
        return str(result["uri"] if isinstance(result, dict) else result)

    @property
    def failure(self) -> tuple[str, str]:
        """(stage, reason) of a failed upload."""
        failure = self.doc.get("failure") or self.doc
        return str(failure.get("stage")), str(failure.get("reason"))


def upload_samples(
    s3: S3Client, bucket: str, count: int, steps: int, upscale_steps: int
) -> list[ObjectRef]:
    """Upload `count` sample images under a fresh prefix; returns what was uploaded."""
    prefix = f"demo/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return [
        upload_sample(s3, bucket, f"{prefix}/sample {i:03d}.png", i, steps, upscale_steps)
        for i in range(count)
    ]


def upload_sample(
    s3: S3Client, bucket: str, key: str, index: int, steps: int, upscale_steps: int
) -> ObjectRef:
    """Upload sample image `index` (with its generation metadata) as `key`."""
    response = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=sample_png(index),
        ContentType="image/png",
        Metadata=sample_metadata(index, steps, upscale_steps),
    )
    return ObjectRef(
        bucket=bucket,
        key=key,
        etag=response["ETag"].strip('"'),
        version_id=response.get("VersionId"),
    )


def wait_for_notifications(
    sqs: SQSClient,
    queue_url: str,
    refs: list[ObjectRef],
    timeout_s: float,
    out: TextIO = sys.stderr,
) -> list[Outcome]:
    """Wait as an app backend would: read completion messages from its queue (long polls)
    until every upload has one, deleting the ones that are ours. Messages about other
    uploads are left for their own reader (they come back after the visibility timeout)."""
    outcomes = {ref.identity: Outcome(ref) for ref in refs}

    def receive() -> None:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in got.get("Messages", []):
            body = json.loads(message["Body"])
            item = outcomes.get(upload_of(body).identity)
            if item is None:
                continue
            item.received.append(body)
            item.status = "completed" if body.get("outcome") == "result" else "failed"
            item.doc = body
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    return _wait(list(outcomes.values()), receive, timeout_s, "messages", out)


def wait_for_outcomes(
    s3: S3Client,
    results_bucket: str,
    refs: list[ObjectRef],
    timeout_s: float,
    out: TextIO = sys.stderr,
) -> list[Outcome]:
    """Poll for a result or a failure record per upload (for when completion messages are
    off, and for benchmarks that measure the pipeline alone)."""
    outcomes = [Outcome(ref) for ref in refs]

    def poll() -> None:
        for item in outcomes:
            if item.status == "pending":
                _look_up(s3, results_bucket, item)
        time.sleep(0.5)

    return _wait(outcomes, poll, timeout_s, "outcomes", out)


def _wait(
    outcomes: list[Outcome], step: Callable[[], None], timeout_s: float, what: str, out: TextIO
) -> list[Outcome]:
    """Call `step` until every outcome is known or time is up, with a progress bar (rich's,
    on `out`; a plain line per change when `out` is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn(f"  {what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[left]:.0f} s left"),
    )
    with Progress(*columns, console=Console(file=out), transient=False) as progress:
        task = progress.add_task(what, total=len(outcomes), left=timeout_s)
        while time.monotonic() < deadline:
            step()
            done = sum(1 for o in outcomes if o.status != "pending")
            progress.update(task, completed=done, left=max(deadline - time.monotonic(), 0.0))
            if done == len(outcomes):
                break
    return outcomes


def _look_up(s3: S3Client, results_bucket: str, item: Outcome) -> None:
    keys = keys_for(item.ref)
    for status, key in (("completed", keys.result_meta), ("failed", keys.failure)):
        body = storage.download_if_exists(s3, results_bucket, key, storage.DOCUMENT_MAX_BYTES)
        if body is not None:
            item.status, item.doc = status, json.loads(body)
            return


def _summary(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    return summarize([o.doc.get("timings_ms", {}) for o in outcomes if o.status == "completed"])


def stage_p50(outcomes: list[Outcome]) -> dict[str, float]:
    """Per-stage p50 over completed images, in ms."""
    return {stage: round(ms, 1) for stage, ms in _summary(outcomes)["p50"].items()}


def stage_table(outcomes: list[Outcome]) -> str:
    summary = _summary(outcomes)
    lines = [f"{'stage':<12}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"]
    for stage in STAGES:
        if stage in summary["p50"]:
            lines.append(
                f"{stage:<12}{summary['p50'][stage]:>10.1f}"
                f"{summary['p95'][stage]:>10.1f}{summary['max'][stage]:>10.1f}"
            )
    return "\n".join(lines)

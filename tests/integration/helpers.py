"""Helpers for integration tests: uploads and reading outcomes back from moto."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from img2img.delivery.audit import AuditReport
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from infra.local.audit import audit
from tests.conftest import free_port


def png(size: tuple[int, int] = (96, 64), color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


FAST = {"steps": "4", "upscale-steps": "2", "strength": "0.5", "prompt": "a test card"}


def upload(
    clients: Any, bucket: str, key: str, body: bytes, metadata: dict[str, str] | None = None
) -> ObjectRef:
    response = clients.s3.put_object(
        Bucket=bucket, Key=key, Body=body, Metadata=FAST if metadata is None else metadata
    )
    return ObjectRef(bucket=bucket, key=key, etag=response["ETag"].strip('"'))


def outcome(clients: Any, results_bucket: str, ref: ObjectRef) -> tuple[str, dict[str, Any]]:
    """("completed", meta) or ("failed", record) or ("missing", {}); ("duplicated", both
    documents) when the upload has a result and a failure record, so no test that expects
    one outcome can pass on two."""
    keys = keys_for(ref)
    found: dict[str, dict[str, Any]] = {}
    for status, key in (("completed", keys.result_meta), ("failed", keys.failure)):
        try:
            body = clients.s3.get_object(Bucket=results_bucket, Key=key)["Body"].read()
        except clients.s3.exceptions.NoSuchKey:
            continue
        found[status] = json.loads(body)
    if len(found) > 1:
        return "duplicated", found
    return next(iter(found.items()), ("missing", {}))


def audited(
    clients: Any,
    settings: Any,
    refs: list[ObjectRef],
    messages: list[Any] | None = None,
) -> AuditReport:
    """The exactly-once audit of `refs` (outcome versions, stage outputs, and `messages`
    when completion messages are on)."""
    return audit(
        clients.s3,
        settings.storage.results_bucket,
        refs,
        messages=messages,
        stage_bucket=settings.storage.stage_bucket,
    )


def result_keys(clients: Any, bucket: str) -> list[str]:
    response = clients.s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in response.get("Contents", []))


def img2img(
    args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run the `img2img` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def drain(
    sqs: Any, queue_url: str, quiet_s: float = 1.0, limit_s: float = 60.0, at_least: int = 0
) -> list[Any]:
    """Every message on a queue (deleted as read) until it stays empty for `quiet_s` after
    at least `at_least` arrived (or `limit_s` passed); bodies parsed as JSON."""
    import time

    found: list[Any] = []
    deadline = time.monotonic() + limit_s
    quiet_until = time.monotonic() + quiet_s
    while time.monotonic() < deadline and (time.monotonic() < quiet_until or len(found) < at_least):
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in got.get("Messages", []):
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            quiet_until = time.monotonic() + quiet_s
    return found


def stack_client(env: dict[str, str], service: str) -> Any:
    """A boto3 client of a local stack's moto (its port from the stack's environment)."""
    import boto3

    kw: dict[str, Any] = {
        "endpoint_url": f"http://127.0.0.1:{env['IMG2IMG_LOCAL__MOTO_PORT']}",
        "region_name": "us-east-1",
        "aws_access_key_id": "local-stack",
        "aws_secret_access_key": "local-stack",
    }
    if service == "s3":  # moto's directory buckets answer only with session auth off
        from botocore.config import Config

        s3_options: Any = {"disable_s3_express_session_auth": True}
        kw["config"] = Config(s3=s3_options)
    return boto3.client(service, **kw)  # type: ignore[call-overload]


def unreachable_s3() -> Any:
    """An S3 client of a loopback port nothing listens on, one attempt per call: every call
    fails to connect at once (S3 out of reach, without waiting on retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )


def stack_env(state_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a local stack of a test's own: this process's, less any Prefect
    or img2img setting, with a private state folder and free loopback ports for Prefect
    and moto, and `settings` on top (which may name those ports itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "IMG2IMG_"))}
    env["IMG2IMG_LOCAL__STATE_DIR"] = str(state_dir)
    env["IMG2IMG_LOCAL__PREFECT_PORT"] = str(free_port())
    env["IMG2IMG_LOCAL__MOTO_PORT"] = str(free_port())
    env.update(settings)
    return env


def cluster_ports() -> dict[str, str]:
    """A local stack's settings for the Prefect server as a cluster (`local up --ha`), on
    free loopback ports of its own: two API replicas, Redis, PostgreSQL, the metrics."""
    return {
        "IMG2IMG_LOCAL__HA": "true",
        "IMG2IMG_LOCAL__API_PORTS": json.dumps([free_port(), free_port()]),
        "IMG2IMG_LOCAL__REDIS_PORT": str(free_port()),
        "IMG2IMG_LOCAL__POSTGRES_PORT": str(free_port()),
        "IMG2IMG_LOCAL__METRICS_PORT": str(free_port()),
    }

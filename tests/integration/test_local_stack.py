"""The main job end to end: `img2img demo` on a fresh local stack, then `local down`.

Starts real processes (moto, Prefect server, the dispatcher, the autoscaler and the warm
workers it starts) on free loopback ports with a private state folder, exactly as
`make demo` does. The stack starts with zero workers: the autoscaler must start one for the
burst of uploads and take it back to zero when idle, with nothing lost or done twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import img2img, stack_env
from tests.integration.warm import wait_for

pytestmark = pytest.mark.slow


def test_demo_on_a_fresh_local_stack(tmp_path: Path, model_cache: Path) -> None:
    env = stack_env(
        tmp_path / "state",
        {
            "IMG2IMG_STAGES__MODEL_CACHE_DIR": str(model_cache),
            "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "8",
            "IMG2IMG_SCALING__INTERVAL_S": "1",
            # Small enough for an oversized upload of a few MB (the samples are far below).
            "IMG2IMG_LIMITS__MAX_BYTES": str(HUGE_LIMIT),
        },
    )
    try:
        demo = img2img(["demo", "--images", "3", "--json", "--timeout", "300"], env, 600)
        assert demo.returncode == 0, demo.stderr[-4000:]
        summary = json.loads(demo.stdout.strip().splitlines()[-1])
        assert summary["submitted"] == 3 and summary["completed"] == 3
        assert summary["failed"] == 0
        # The warm slot ran the run's images several per device call (same parameters).
        assert summary["device_batch_max"]["generate"] >= 2, summary
        assert summary["device_batch_max"]["upscale"] >= 2, summary
        # The demo waited on the completion messages, as an app does: one per upload.
        assert summary["notified"] == 3 and summary["duplicate_messages"] == 0
        assert len(summary["results"]) == 3 and summary["flow_runs"]
        for stage in ("copy", "generate", "upscale", "upload", "total"):
            assert summary["stage_p50_ms"][stage] > 0
        assert "tiny random-weight models" in demo.stderr

        # The audit's: exactly one result per upload, written once, announced once.
        assert summary["lost"] == 0 and summary["duplicated"] == 0, summary
        assert summary["audit"]["results"] == 3 and summary["audit"]["written_twice"] == 0
        assert summary["audit"]["unannounced"] == 0, summary

        def services() -> dict:
            return json.loads(img2img(["local", "status"], env, 60).stdout)

        def workers(status: dict) -> list[str]:
            return [k for k, v in status.items() if k.startswith("worker") and v["running"]]

        _mixed_batch_is_announced_once(env)
        _readme_app_snippet_works(env, tmp_path)

        status = services()
        assert status["autoscaler"]["running"] and status["dispatcher"]["running"]
        again = img2img(["local", "up"], env, 300)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "already running" in again.stderr
        steady = {k: v for k, v in services().items() if not k.startswith("worker")}
        assert steady == {k: v for k, v in status.items() if not k.startswith("worker")}

        # Idle: the autoscaler drains the worker it started, back to zero.
        deadline = time.monotonic() + 180
        while workers(services()) and time.monotonic() < deadline:
            time.sleep(2)
        assert workers(services()) == []
        log = (tmp_path / "state" / "logs" / "autoscaler.log").read_text()
        assert "activate from zero" in log and "scale to 0" in log
        _every_worker_started_served_a_run(env)
    finally:
        down = img2img(["local", "down"], env, 120)
    assert down.returncode == 0
    final = json.loads(img2img(["local", "status"], env, 60).stdout)
    assert not any(s["running"] for s in final.values())


HUGE_LIMIT = 2_000_000


def _mixed_batch_is_announced_once(env: dict[str, str]) -> None:
    """Good, bad and oversized uploads with the caller's id, and one S3 event delivered again
    after its outcome was announced: exactly one message each on the app's queue. The
    oversized one is refused by its event's size: never copied to the stage bucket."""
    import boto3
    from botocore.config import Config

    from img2img.intake.events import ObjectRef
    from infra.local.audit import audit
    from infra.local.resources import APP_QUEUE
    from tests.integration.helpers import FAST, drain, png

    endpoint = f"http://127.0.0.1:{env['IMG2IMG_LOCAL__MOTO_PORT']}"
    key_id = "local-stack"
    session = boto3.Session(
        aws_access_key_id=key_id, aws_secret_access_key=key_id, region_name="us-east-1"
    )
    s3 = session.client("s3", endpoint_url=endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)
    # moto has no S3 Express sessions: the directory bucket is read with plain signing.
    plain = Config(s3={"disable_s3_express_session_auth": True})  # type: ignore[arg-type]
    stage_s3 = session.client("s3", endpoint_url=endpoint, config=plain)
    app_queue = sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
    uploads = {
        "app/good.png": (png(), "req-good"),
        "app/bad.png": (b"not an image", "req-bad"),
        "app/huge.png": (png() + b"\0" * HUGE_LIMIT, "req-huge"),
    }
    etags = {}
    for key, (body, request_id) in uploads.items():
        metadata = {**FAST, "request-id": request_id}
        put = s3.put_object(Bucket="img2img-uploads", Key=key, Body=body, Metadata=metadata)
        etags[key] = put["ETag"].strip('"')

    first = drain(sqs, app_queue, quiet_s=2, limit_s=180, at_least=3)
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "img2img-uploads"},
                    "object": {"key": "app/good.png", "eTag": etags["app/good.png"]},
                },
            }
        ]
    }
    ingest = sqs.get_queue_url(QueueName="img2img-ingest")["QueueUrl"]
    sqs.send_message(QueueUrl=ingest, MessageBody=json.dumps(event))
    # Positive signals first: the dispatcher took the redelivery off the queue, and every
    # run it may have made of it has finished; only then is "no message" a finding.
    wait_for(lambda: _queue_empty(sqs, ingest), 120, "the redelivery to be taken", interval=0.5)
    wait_for(lambda: not _unfinished_runs(env), 180, "every run to finish", interval=1.0)
    again = drain(sqs, app_queue, quiet_s=2, limit_s=60)

    assert sorted(m["upload"]["key"] for m in first) == [
        "app/bad.png",
        "app/good.png",
        "app/huge.png",
    ]
    assert again == []
    refs = [ObjectRef(bucket="img2img-uploads", key=k, etag=etags[k]) for k in uploads]
    report = audit(s3, "img2img-results", refs, messages=first + again)
    assert report.problems == (), report.problems
    assert report.counts()["results"] == 1 and report.counts()["failure_records"] == 2
    by_key = {m["upload"]["key"]: m for m in first}
    assert by_key["app/good.png"]["outcome"] == "result"
    assert by_key["app/good.png"]["request_id"] == "req-good"
    assert by_key["app/bad.png"]["outcome"] == "failure"
    assert by_key["app/bad.png"]["request_id"] == "req-bad"
    assert by_key["app/bad.png"]["failure"]["stage"] == "preprocess"
    huge = by_key["app/huge.png"]
    size = len(uploads["app/huge.png"][0])
    assert huge["outcome"] == "failure" and huge["request_id"] == "req-huge"
    assert huge["failure"]["stage"] == "validate" and not huge["failure"]["retryable"]
    assert f"upload is {size} bytes; the limit is {HUGE_LIMIT}" in huge["failure"]["reason"]
    staged = stage_s3.list_objects_v2(Bucket="img2img-stage--use1-az4--x-s3").get("Contents", [])
    assert staged and not any("huge" in o["Key"] for o in staged), staged


def _queue_empty(sqs: Any, url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return all(got[n] == "0" for n in names)


def _unfinished_runs(env: dict[str, str]) -> int:
    """The pool's runs not yet in a final state."""
    import httpx

    api = f"http://127.0.0.1:{env['IMG2IMG_LOCAL__PREFECT_PORT']}/api"
    states = {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"]}}
    got = httpx.post(f"{api}/flow_runs/count", json={"flow_runs": {"state": states}}, timeout=30)
    got.raise_for_status()
    return int(got.json())


def _readme_app_snippet_works(env: dict[str, str], tmp_path: Path) -> None:
    """The "From the app's side" snippet of docs/using.md, run as written against this stack."""
    import re
    import subprocess
    import sys

    from PIL import Image

    from tests.integration.helpers import img2img

    readme = (Path(__file__).resolve().parents[2] / "docs" / "using.md").read_text()
    section = readme.split("## From the app's side", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    app_env = dict(env)
    for line in img2img(["local", "env"], env, 60).stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        app_env[key] = value.strip("'")
    run = subprocess.run(
        [sys.executable, "-c", snippet.group(1)],
        env=app_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("result.png ") and "ms after the upload" in run.stdout
    with Image.open(tmp_path / "result.png") as result:
        assert result.size[0] > 0


def _every_worker_started_served_a_run(env: dict[str, str]) -> None:
    """The demo, the mixed batch, the redelivery and the docs' app upload came as small bursts:
    every warm worker the autoscaler started (each registers in Prefect under its own
    name) ran at least one of the pool's flow runs. A host started for a burst that the
    running slots had already cleared would be listed with none."""
    import httpx

    from infra.local.env import POOL

    api = f"http://127.0.0.1:{env['IMG2IMG_LOCAL__PREFECT_PORT']}/api"
    with httpx.Client(base_url=api, timeout=30) as http:
        workers = http.post(f"/work_pools/{POOL}/workers/filter", json={"limit": 200})
        workers.raise_for_status()
        runs = http.post(
            "/flow_runs/filter",
            json={"work_pools": {"name": {"any_": [POOL]}}, "limit": 200},
        )
        runs.raise_for_status()
    started = {w["name"] for w in workers.json()}
    served = {r["labels"].get("prefect.worker.name") for r in runs.json() if r.get("labels")}
    assert started, "the autoscaler started no worker"
    assert started <= served, f"workers that served no run: {sorted(started - served)}"

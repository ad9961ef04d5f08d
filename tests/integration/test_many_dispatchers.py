"""Two dispatcher replicas on one queue and two warm-worker hosts, with every S3 notification
delivered twice (as S3 and SQS may): every upload ends as exactly one outcome, the app gets
exactly one completion message per upload, as the exactly-once audit reads them.

A local stack of its own (SQLite, moto, the Prefect server, two dispatchers, two fixed
workers, no autoscaler) on free loopback ports, on the simulated device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from img2img.intake.events import ObjectRef
from infra.chaos.scenarios import notification
from infra.local.audit import audit, drain_messages, runs_per_upload
from infra.local.resources import APP_QUEUE
from tests.conftest import free_port
from tests.integration.helpers import img2img, png, stack_client, stack_env
from tests.integration.warm import wait_for

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

pytestmark = pytest.mark.slow
IMAGES = 16


def test_two_dispatchers_two_hosts_every_message_twice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = stack_env(
        state,
        {
            "IMG2IMG_LOCAL__METRICS_PORT": str(free_port()),
            "IMG2IMG_LOCAL__DISPATCHERS": "2",
            "IMG2IMG_LOCAL__WORKERS": "2",
            "IMG2IMG_LOCAL__AUTOSCALER": "false",
            "IMG2IMG_STAGES__BACKEND": "simulated",
            "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "20",
            "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "20",
            "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0.5",
            "IMG2IMG_DISPATCH__MAX_BATCH": "4",
            "IMG2IMG_DISPATCH__MAX_WAIT_S": "1",
        },
    )
    try:
        up = img2img(["local", "up"], env, 300)
        assert up.returncode == 0, up.stderr[-3000:]
        status = json.loads(img2img(["local", "status"], env, 60).stdout)
        running = {name for name, s in status.items() if s["running"]}
        assert {"dispatcher", "dispatcher-1", "worker-0", "worker-1"} <= running, status
        assert "autoscaler" not in running
        # The stack's Prefect server runs with retention on (Prefect's database vacuum).
        server_pid = (state / "pids" / "prefect-server.pid").read_text().strip()
        server_env = Path(f"/proc/{server_pid}/environ").read_bytes().split(b"\0")
        assert b"PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs,orphans" in server_env

        # Both replicas polling before the uploads: `local up` returns once they are
        # started, and a replica still importing would leave every message to the other.
        wait_for(
            lambda: all(
                "dispatching from" in _log(state, name) for name in ("dispatcher", "dispatcher-1")
            ),
            60,
            "both dispatchers to poll the ingest queue",
            interval=0.2,
        )
        s3, sqs = stack_client(env, "s3"), stack_client(env, "sqs")
        ingest = sqs.get_queue_url(QueueName="img2img-ingest")["QueueUrl"]
        app = sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
        refs = []
        for i in range(IMAGES):
            key = f"twice/{i:02d}.png"
            got = s3.put_object(
                Bucket="img2img-uploads",
                Key=key,
                Body=png((64 + i, 64)),
                Metadata={"steps": "2", "upscale-steps": "2", "strength": "0.5"},
            )
            ref = ObjectRef(bucket="img2img-uploads", key=key, etag=got["ETag"].strip('"'))
            refs.append(ref)
            # S3 already sent its notification; a second copy of it, as a redelivery.
            sqs.send_message(QueueUrl=ingest, MessageBody=notification(ref))

        # Every completion message, until each upload has one and then none comes for 5 s
        # (a late duplicate would come within seconds of the last run).
        messages = drain_messages(sqs, app, refs, quiet_s=5, limit_s=240)
        report = audit(
            s3,
            "img2img-results",
            refs,
            messages=messages,
            stage_bucket="img2img-stage--use1-az4--x-s3",
            runs=runs_per_upload(_flow_runs(env)),
        )
        counts = report.counts()
        print(json.dumps({"test": "two-dispatchers-two-hosts", **counts}))
        # The audit: one result each, written once, one completion message each.
        assert report.problems == (), report.problems
        assert counts["results"] == IMAGES and counts["stray_messages"] == 0
        # Every upload was held by a run (the runs read are the ones that did the work).
        assert all(v.runs for v in report.verdicts), [v.runs for v in report.verdicts]
        # Both replicas took messages and created runs; both hosts ran them.
        created = {
            name: _log(state, name).count("flow run ") for name in ("dispatcher", "dispatcher-1")
        }
        assert all(created.values()), created
        served = {
            name: _log(state, name).count("submitting flow run")
            for name in ("worker-0", "worker-1")
        }
        assert all(served.values()), served
        # Nothing went to the dead-letter queue, and the ingest queue is empty.
        dlq = sqs.get_queue_url(QueueName="img2img-ingest-dlq")["QueueUrl"]
        for queue in (dlq, ingest):
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            assert attrs == {
                "ApproximateNumberOfMessages": "0",
                "ApproximateNumberOfMessagesNotVisible": "0",
            }, queue
    finally:
        down = img2img(["local", "down"], env, 300)
        assert down.returncode == 0, down.stderr[-2000:]


def _flow_runs(env: dict[str, str]) -> list[FlowRun]:
    """Every flow run the dispatchers created."""
    import urllib.request

    from prefect.client.schemas.objects import FlowRun

    api = f"http://127.0.0.1:{env['IMG2IMG_LOCAL__PREFECT_PORT']}/api"
    body = json.dumps({"flow_runs": {"tags": {"all_": ["s3-event"]}}, "limit": 200}).encode()
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return [FlowRun.model_validate(r) for r in json.loads(response.read())]


def _log(state: Path, name: str) -> str:
    return (state / "logs" / f"{name}.log").read_text(errors="replace")

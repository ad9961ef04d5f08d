"""The Prefect server as a cluster on the local stack (`img2img local up --ha`): two API
replicas behind HAProxy, the background services in a process of their own, PostgreSQL and
Redis; every client through the balancer. Real processes on free loopback ports; each
replica is killed by its PID in turn, and uploads still come back, started by the events
stream (the workers' timed poll is set to a minute here); then a cancellation still reaches
the worker on that stream (its fallback poll set to five minutes here)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.local.resources import APP_QUEUE
from tests.integration.helpers import (
    FAST,
    cluster_ports,
    drain,
    img2img,
    png,
    stack_client,
    stack_env,
)
from tests.integration.warm import wait_for

pytestmark = pytest.mark.slow

PARTS = ("postgres", "redis", "prefect-api-0", "prefect-api-1", "prefect-services", "prefect-lb")


def _status(env: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(img2img(["local", "status"], env, 60).stdout))


def _demo(env: dict[str, str]) -> dict[str, Any]:
    demo = img2img(["demo", "--images", "2", "--json", "--timeout", "240"], env, 400)
    assert demo.returncode == 0, demo.stderr[-4000:]
    return dict(json.loads(demo.stdout.strip().splitlines()[-1]))


def _running_run(api: str) -> str | None:
    running = {"state": {"type": {"any_": ["RUNNING"]}}}
    got = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": running}, timeout=30)
    got.raise_for_status()
    return got.json()[0]["id"] if got.json() else None


def _state_of(api: str, run_id: str) -> str:
    got = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30)
    got.raise_for_status()
    return str(got.json()["state"]["type"])


def _a_cancel_reaches_the_worker_on_the_stream(env: dict[str, str], worker_log: Path) -> None:
    """Cancel a running run through the balancer: the worker hears it on its events
    subscription (back on a surviving replica), not at its fallback poll (five minutes),
    stops the run, and the upload ends as one failure record and one message."""
    api = f"http://127.0.0.1:{env['IMG2IMG_LOCAL__PREFECT_PORT']}/api"
    # The cancel observer's stream came back after each replica's death and stopped polling.
    wait_for(
        lambda: (
            worker_log.read_text().count(
                "FlowRunCancellingObserver reconnected to the events stream and stopped polling"
            )
            >= 1
        ),
        60,
        "the cancellation stream to come back",
    )
    s3, sqs = stack_client(env, "s3"), stack_client(env, "sqs")
    s3.put_object(Bucket="img2img-uploads", Key="ha/cancel.png", Body=png(), Metadata=FAST)
    run_id = wait_for(lambda: _running_run(api), 60, "the upload's run to start", interval=0.2)
    cancel = {"state": {"type": "CANCELLING", "name": "Cancelling", "message": "operator"}}
    httpx.post(
        f"{api}/flow_runs/{run_id}/set_state", json={**cancel, "force": True}, timeout=30
    ).raise_for_status()
    asked = time.monotonic()
    wait_for(
        lambda: f"cancelling flow run {run_id}" in worker_log.read_text(),
        30,
        "the worker to hear the cancel",
        interval=0.1,
    )
    heard_s = time.monotonic() - asked
    assert heard_s < 30, heard_s  # the poll would take five minutes
    wait_for(lambda: _state_of(api, run_id) == "CANCELLED", 90, "the run to end Cancelled")
    app = sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
    messages = [
        m
        for m in drain(sqs, app, quiet_s=3, limit_s=90, at_least=1)
        if m["upload"]["key"] == "ha/cancel.png"
    ]
    assert len(messages) == 1, messages
    assert messages[0]["outcome"] == "failure"
    assert messages[0]["failure"]["stage"] == "cancelled", messages[0]


def test_the_cluster_serves_uploads_through_each_replica_s_death(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = stack_env(
        state,
        {
            **cluster_ports(),
            # The simulated device, slow enough (5 s a one-image run) for a cancel to land.
            "IMG2IMG_STAGES__BACKEND": "simulated",
            "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "2500",
            "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "2500",
            "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0.2",
            "IMG2IMG_SCALING__INTERVAL_S": "1",
            "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "600",
            # Only the events stream starts a run within a minute.
            "PREFECT_WORKER_QUERY_SECONDS": "60",
            # Only the events stream tells a cancel within five minutes.
            "IMG2IMG_WORKER__CANCEL_POLL_S": "300",
        },
    )
    try:
        up = img2img(["local", "up", "--ha"], env, 400)
        assert up.returncode == 0, up.stderr[-4000:]
        status = _status(env)
        assert all(status[p]["running"] and status[p]["healthy"] for p in PARTS), status
        assert "prefect-server" not in status  # one address, the balancer's
        config = (state / "haproxy.cfg").read_text()
        assert config.count("check") >= 2 and env["IMG2IMG_LOCAL__PREFECT_PORT"] in config

        first = _demo(env)
        assert (first["completed"], first["lost"], first["duplicated"]) == (2, 0, 0), first

        worker_log = state / "logs" / "worker-0.log"
        for replica in ("prefect-api-0", "prefect-api-1"):
            before = _status(env)[replica]["pid"]
            os.kill(int(before), signal.SIGKILL)
            after = _demo(env)
            assert (after["completed"], after["lost"], after["duplicated"]) == (2, 0, 0), after
            # Claimed from the stream, not at the next timed poll (a minute).
            assert after["stage_p50_ms"]["claim"] < 10_000, after["stage_p50_ms"]
            wait_for(
                lambda r=replica, b=before: (s := _status(env)[r])["healthy"] and s["pid"] != b,
                120,
                f"the supervisor to restart {replica}",
            )
        # Both replicas died once: the worker's subscription was on one of them, and came
        # back through the balancer.
        text = worker_log.read_text()
        assert "run-start events back" in text, text[-3000:]
        supervisor = (state / "logs" / "supervisor.log").read_text()
        assert supervisor.count("was not running; restarted it") >= 2
        _a_cancel_reaches_the_worker_on_the_stream(env, worker_log)
    finally:
        down = img2img(["local", "down"], env, 180)
    assert down.returncode == 0
    deadline = time.monotonic() + 30
    while any(s["running"] for s in _status(env).values()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not any(s["running"] for s in _status(env).values())

"""The Prefect server as a cluster on the local stack (`img2img local up --ha`): two API
replicas behind HAProxy, the background services in a process of their own, PostgreSQL and
Redis; every client through the balancer. Real processes on free loopback ports; each
replica is killed by its PID in turn, and uploads still come back, started by the events
stream (the workers' timed poll is set to a minute here)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.integration.helpers import img2img, stack_env
from tests.integration.warm import wait_for

pytestmark = pytest.mark.slow

PARTS = ("postgres", "redis", "prefect-api-0", "prefect-api-1", "prefect-services", "prefect-lb")


def _status(env: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(img2img(["local", "status"], env, 60).stdout))


def _demo(env: dict[str, str]) -> dict[str, Any]:
    demo = img2img(["demo", "--images", "2", "--json", "--timeout", "240"], env, 400)
    assert demo.returncode == 0, demo.stderr[-4000:]
    return dict(json.loads(demo.stdout.strip().splitlines()[-1]))


def test_the_cluster_serves_uploads_through_each_replica_s_death(
    tmp_path: Path, model_cache: Path
) -> None:
    state = tmp_path / "state"
    env = stack_env(
        state,
        {
            "IMG2IMG_LOCAL__HA": "true",
            "IMG2IMG_LOCAL__API_PORTS": json.dumps([free_port(), free_port()]),
            "IMG2IMG_LOCAL__REDIS_PORT": str(free_port()),
            "IMG2IMG_LOCAL__POSTGRES_PORT": str(free_port()),
            "IMG2IMG_LOCAL__METRICS_PORT": str(free_port()),
            "IMG2IMG_STAGES__MODEL_CACHE_DIR": str(model_cache),
            "IMG2IMG_SCALING__INTERVAL_S": "1",
            "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "600",
            # Only the events stream starts a run within a minute.
            "PREFECT_WORKER_QUERY_SECONDS": "60",
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
    finally:
        down = img2img(["local", "down"], env, 180)
    assert down.returncode == 0
    deadline = time.monotonic() + 30
    while any(s["running"] for s in _status(env).values()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not any(s["running"] for s in _status(env).values())

"""Helpers to run a real `prefect worker start --type img2img-warm` against the test server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL

from tests.integration.helpers import FAST, png, upload


def create_pool_and_deployment(
    client: Any, pool_type: str = "img2img-warm", template: dict[str, Any] | None = None
) -> tuple[str, Any]:
    """A fresh work pool (with `template` as its base job template, if given) and a pipeline
    deployment on it; returns (pool name, deployment id)."""
    pool = f"test-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(
        WorkPoolCreate(name=pool, type=pool_type, base_job_template=template or {})
    )
    flow_id = client.create_flow_from_name("img2img-pipeline")
    deployment_id = client.create_deployment(
        flow_id=flow_id,
        name=pool,
        entrypoint="flows.pipeline.img2img_pipeline",
        work_pool_name=pool,
    )
    return pool, deployment_id


@contextmanager
def warm_worker(pool: str, log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A warm worker process on `pool`; stopped (SIGKILL of its group) on exit."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    full.update(
        {
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_WORKER_QUERY_SECONDS": "0.5",
            "PREFECT_WORKER_PREFETCH_SECONDS": "0",
            "OMP_NUM_THREADS": "1",
            **env,
        }
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                pool,
                "--type",
                "img2img-warm",
                "--name",
                f"{pool}-worker",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def wait_for(predicate: Any, timeout_s: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def submit(
    client: Any,
    clients: Any,
    settings: Any,
    deployment_id: Any,
    name: str,
    count: int = 1,
    metadata: dict[str, str] | None = None,
) -> tuple[Any, list[Any]]:
    """Upload `count` images and create one flow run for them; returns (run, refs)."""
    refs = [
        upload(clients, settings.storage.uploads_bucket, f"{name}/{i}.png", png(), metadata or FAST)
        for i in range(count)
    ]
    run = client.create_flow_run_from_deployment(
        deployment_id, parameters={"objects": [r.model_dump(mode="json") for r in refs]}
    )
    return run, refs


def state_of(client: Any, run_id: Any) -> Any:
    return client.read_flow_run(run_id).state


def final_state(client: Any, run_id: Any, timeout_s: float = 120) -> Any:
    return wait_for(
        lambda: (s := state_of(client, run_id)) is not None and s.is_final() and s,
        timeout_s,
        f"flow run {run_id} to finish",
    )


def ready(log: Path, count: int = 1) -> bool:
    """Whether the worker logging to `log` has `count` slots that loaded their models."""
    return log.read_text(errors="replace").count(": ready (pid") >= count


def slot_pid_of_running(client: Any, run_id: Any, timeout_s: float = 120) -> int:
    """Wait until the run is Running on a slot; the slot process's pid. A run that ends
    before it was seen running fails at once, saying so (a test that means to hit a run
    while it runs must give it enough work). (The test server's SQLite locks up for seconds
    under the full suite's load: the bound is for a stuck run, not a slow one.)"""

    def running() -> Any:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            raise AssertionError(
                f"flow run {run_id} ended ({run.state.name}) before it was seen running"
            )
        return run.state is not None and run.state.is_running() and run.infrastructure_pid and run

    run = wait_for(running, timeout_s, f"flow run {run_id} to start on a slot")
    return int(run.infrastructure_pid)


class RecordingGroup:
    """The infrastructure a host runs in (an Auto Scaling group), which cannot run here: it
    records what the autoscaler asks of it. AsgTarget and EcsTarget's `replace` are
    tested against moto in test_scale_targets."""

    name = "group"

    def __init__(self) -> None:
        self.replaced: list[tuple[str, str]] = []

    def current(self) -> int:
        return 1

    def warm(self) -> int:
        return 0

    def apply(self, desired: int, busy: set[str]) -> str:
        return f"desired {desired}"

    def replace(self, host: str, reason: str) -> str:
        self.replaced.append((host, reason))
        return f"replaced {host}"

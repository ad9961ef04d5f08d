"""Retention: a real Prefect server started with the retention settings the local stack and
the AWS template give it deletes a finished run past the period (its task runs, logs and
artifacts with it) and events past theirs, and keeps what is younger."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from img2img.config.retention import RetentionSettings, prefect_server_env
from infra.local.processes import http_ok
from tests.conftest import free_port

PERIOD_H = 1.01  # Prefect wants more than an hour


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A Prefect server of its own (SQLite in tmp_path) whose vacuum runs every second."""
    port = free_port()
    retention = RetentionSettings(
        runs_days=PERIOD_H / 24,
        events_days=1.0,
        vacuum_interval_s=1,
        orphans_interval_s=1,
    )
    env = {
        **os.environ,
        **prefect_server_env(retention),
        "PREFECT_HOME": str(tmp_path),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/prefect.db",
    }
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while not http_ok(f"{url}/health"):
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Prefect server did not answer in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _finished_run(client: Any, database: Path, ended: datetime) -> tuple[UUID, UUID]:
    """(flow run, task run): a run that completed at `ended`, with a task run, a log line
    and an artifact of its own."""
    from prefect import flow, task
    from prefect.client.schemas.actions import ArtifactCreate, LogCreate
    from prefect.states import Completed, Running

    assert database.exists(), database

    @flow(name="img2img-pipeline")
    def pipeline() -> None:
        return None

    @task(name="retained-step")
    def step() -> None:
        return None

    run = client.create_flow_run(pipeline, name=f"run-{ended:%H%M%S}")
    client.set_flow_run_state(run.id, Running(), force=True)
    client.set_flow_run_state(run.id, Completed(), force=True)
    # The server stamps states with its own clock: the run is aged in its database, as if
    # it had ended at `ended`.
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE flow_run SET end_time = ? WHERE id = ?",
            (ended.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), str(run.id)),
        )
    task_run_id = _create_task_run_once(client, step, run.id, Completed(timestamp=ended))
    client.create_logs(
        [LogCreate(name="img2img", level=20, message="a line", timestamp=ended, flow_run_id=run.id)]
    )
    client.create_artifact(
        ArtifactCreate(key="img2img-retention", type="markdown", data="x", flow_run_id=run.id)
    )
    return run.id, task_run_id


def _create_task_run_once(client: Any, step: Any, flow_run_id: Any, state: Any) -> Any:
    """The task run, created once: on a loaded machine the client may send its request
    again after a slow answer, and the server then refuses the second with 409 while the
    first may still be committing: read that run back (for a few seconds) rather than
    fail."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.exceptions import PrefectHTTPStatusError

    try:
        return client.create_task_run(
            step, flow_run_id=flow_run_id, dynamic_key="0", state=state
        ).id
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 409:
            raise
    runs: list[Any] = []

    def found() -> bool:
        runs[:] = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        return len(runs) == 1

    _until(found, 30)
    return runs[0].id


def _until(check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


async def _emit(api_url: str, name: str, occurred: datetime) -> None:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async with PrefectEventsClient(api_url=api_url) as events:
        await events.emit(
            Event(event=name, occurred=occurred, resource={"prefect.resource.id": "img2img.test"})
        )


def test_old_runs_their_logs_and_artifacts_and_old_events_are_deleted(
    server: str, tmp_path: Path
) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterId,
    )
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    database = tmp_path / "prefect.db"
    now = datetime.now(UTC)
    with temporary_settings({PREFECT_API_URL: server}), get_client(sync_client=True) as client:
        old, old_task = _finished_run(client, database, now - timedelta(hours=2))
        young, young_task = _finished_run(client, database, now - timedelta(minutes=5))
        asyncio.run(_emit(server, "img2img.test.old", now - timedelta(days=2)))
        asyncio.run(_emit(server, "img2img.test.young", now))

        def events(name: str) -> int:
            occurred = EventOccurredFilter(
                since=now - timedelta(days=3), until=now + timedelta(hours=1)
            )
            page = client.read_events(
                EventFilter(event=EventNameFilter(name=[name]), occurred=occurred), limit=50
            )
            return len(page.events)

        def logs(run: UUID) -> int:
            return len(client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run]))))

        def artifacts(run: UUID) -> int:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run]))
            return len(client.read_artifacts(artifact_filter=flt))

        def task_runs(task_run: UUID) -> int:
            flt = TaskRunFilter(id=TaskRunFilterId(any_=[task_run]))
            return len(client.read_task_runs(task_run_filter=flt))

        # Both events go the same way; the young one shows they reach the database.
        _until(lambda: events("img2img.test.young") == 1, 30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                client.read_flow_run(old)
            except ObjectNotFound:
                if not (logs(old) or artifacts(old) or events("img2img.test.old")):
                    break
            time.sleep(1)
        with pytest.raises(ObjectNotFound):
            client.read_flow_run(old)
        assert (task_runs(old_task), logs(old), artifacts(old)) == (0, 0, 0)
        assert events("img2img.test.old") == 0
        # What is younger than its period stays whole.
        assert client.read_flow_run(young).state_name == "Completed"
        assert (task_runs(young_task), logs(young), artifacts(young)) == (1, 1, 1)
        assert events("img2img.test.young") == 1

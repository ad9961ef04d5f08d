"""Hung slots with real processes: a real Prefect API, moto over HTTP, real warm-worker
processes whose simulated device stops answering, and the recovery service. A hang is found
from the slot's progress, the slot is killed and replaced, and every upload still ends with
exactly one outcome."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient

from tests.conftest import AwsEnv
from tests.integration.helpers import FAST, png, upload
from tests.integration.test_recovery import (
    SIM,
    exactly_one_outcome_each,
    outcomes,
    recovery,
    settled,
)
from tests.integration.warm import (
    RecordingGroup,
    create_pool_and_deployment,
    ready,
    submit,
    wait_for,
    warm_worker,
)

pytestmark = pytest.mark.usefixtures("prefect_api")


HANG = {
    **SIM,
    "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "100",
    "IMG2IMG_STAGES__SIMULATED__HANG_MARKER": "HANG",
    # Stage 1 calls take 0.1 s: 10 x that is under the floor, so its deadline is the floor,
    # 3 s; a slot that sends nothing for 3 s (beats every 0.5 s) is hung too.
    "IMG2IMG_WORKER__HANG_FLOOR_S": "3",
    "IMG2IMG_WORKER__HANG_GRACE_S": "0.5",
    "IMG2IMG_WORKER__PROGRESS_BEAT_S": "0.5",
}


def test_a_device_that_hangs_on_one_image_isolates_it_as_one_hung_failure_record(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    """A stage-1 call that never returns (the process lives on and beats): the worker sees
    the device make no progress, kills the slot, replaces it, and recovery re-runs and
    splits until the hanging image is alone; it ends as one failure record naming the stage
    and the hang, the others as results."""
    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    refs = []
    for i in range(2):
        meta = {**FAST, "prompt": "HANG here" if i == 1 else "a test card"}
        refs.append(upload(clients, settings.storage.uploads_bucket, f"hang/{i}.png", png(), meta))
    with warm_worker(pool, log, HANG), recovery(client, clients, settings, pool) as rec:
        wait_for(lambda: ready(log), 120, "the slot to load")
        client.create_flow_run_from_deployment(
            deployment_id, parameters={"objects": [r.model_dump(mode="json") for r in refs]}
        )
        wait_for(
            lambda: all(s != "missing" for s, _ in outcomes(clients, settings, refs)),
            240,
            "every upload to have an outcome",
            interval=1.0,
        )
    results = outcomes(clients, settings, refs)
    assert [s for s, _ in results] == ["completed", "failed"], [
        (s, d.get("reason")) for s, d in results
    ] + rec.stats.actions
    record = results[1][1]
    assert record["stage"] == "generate" and record["retryable"] is True, record
    assert record["reason"].startswith("hung: no progress for "), record
    assert rec.stats.split >= 1 and rec.stats.gave_up == 1, rec.stats.actions
    text = log.read_text(errors="replace")
    assert "SIGKILL" in text and "during generate" in text
    exactly_one_outcome_each(clients, settings, refs)


def test_a_worker_whose_device_stays_stuck_goes_unhealthy_and_its_host_is_replaced(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    """The device hangs on a run, and the replacement slots hang in their warm-up too (the
    device stays stuck): the slot is given up, the worker says it is unhealthy (an event on
    the pool), stops heartbeating and gives back the run it held, and the autoscaler
    replaces its host; another host finishes the run."""
    from prefect.events.filters import EventFilter, EventNameFilter

    from deployments.services.autoscaler import Autoscaler
    from deployments.worker.names import UNHEALTHY_EVENT
    from img2img.config.scaling import ScalingSettings

    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    stuck = tmp_path / "device-stuck"
    env = {
        **HANG,
        "IMG2IMG_STAGES__SIMULATED__HANG_FILE": str(stuck),
        # Long enough for a first load on a loaded machine (3–5 s here), short for a stuck one.
        "IMG2IMG_WORKER__SLOT_START_TIMEOUT_S": "10",
        "IMG2IMG_WORKER__RESTART_BACKOFF_S": "0.5",
        "IMG2IMG_WORKER__UNHEALTHY_AFTER": "2",
    }
    log = tmp_path / "worker.log"
    with recovery(client, clients, settings, pool):
        with warm_worker(pool, log, env):
            wait_for(lambda: ready(log), 120, "the slot to load")
            stuck.write_text("the device stops answering\n")
            run, refs = submit(client, clients, settings, deployment_id, "stuck", count=2)
            wait_for(
                lambda: "worker unhealthy" in log.read_text(errors="replace"), 120, "unhealthy"
            )
            group = RecordingGroup()
            scaler = Autoscaler(client, pool, ScalingSettings(), group)
            wait_for(lambda: scaler.step() and group.replaced, 60, "the host to be replaced")
            host, reason = group.replaced[0]
            assert host == f"{pool}-worker" and "no slot left" in reason
            events = client.read_events(
                EventFilter(event=EventNameFilter(name=[UNHEALTHY_EVENT])), limit=50
            ).events
            assert any(e.payload.get("pool") == pool for e in events)
            sick = next(str(e.payload["worker"]) for e in events if e.payload.get("pool") == pool)

            # A run the unhealthy worker still holds is no demand (no host can run it until
            # it is released); the same run held by a healthy worker is.
            from prefect.states import Cancelled, Running

            held = client.create_flow_run_from_deployment(deployment_id, parameters={"objects": []})
            client.set_flow_run_state(held.id, Running(), force=True)
            client.update_flow_run_labels(held.id, {"prefect.worker.name": sick})
            assert scaler.observe().running == 0
            client.update_flow_run_labels(held.id, {"prefect.worker.name": "healthy@1"})
            assert scaler.observe().running == 1
            client.set_flow_run_state(held.id, Cancelled(), force=True)

            def beats() -> dict[str, Any]:
                return {
                    w.name: w.last_heartbeat_time for w in client.read_workers_for_work_pool(pool)
                }

            # No more heartbeats: Prefect's record of the worker stops moving.
            before = beats()
            time.sleep(4)
            assert beats() == before
        stuck.unlink()
        with warm_worker(pool, tmp_path / "second.log", HANG):  # the replacement host
            state = settled(client, run.id)
    assert state.is_completed(), state
    assert [s for s, _ in outcomes(clients, settings, refs)] == ["completed"] * 2
    exactly_one_outcome_each(clients, settings, refs)

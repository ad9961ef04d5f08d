"""Fault injection with real processes: a real Prefect API, moto over HTTP, real warm-worker
processes killed by their PIDs, and the recovery service. Every scenario ends with each
upload having exactly one outcome."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient

from deployments.services.recovery import RecoveryService, RunRecovery
from img2img.intake.keys import keys_for
from infra.local.processes import alive
from tests.conftest import AwsEnv
from tests.integration.helpers import FAST, audited, outcome, result_keys
from tests.integration.warm import (
    create_pool_and_deployment,
    ready,
    slot_pid_of_running,
    submit,
    wait_for,
    warm_worker,
)

pytestmark = pytest.mark.usefixtures("prefect_api")

SIM = {
    "IMG2IMG_STAGES__BACKEND": "simulated",
    "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "400",
    "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "200",
    "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0.2",
    "IMG2IMG_STAGES__SIMULATED__CRASH_MARKER": "POISON",
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "1",
}


@contextmanager
def recovery(
    client: Any, clients: Any, settings: Any, pool: str, announcer: Any = None
) -> Iterator[RunRecovery]:
    """The recovery service, on a test's time scale, in a thread of this process."""
    fast = settings.model_copy(
        update={
            "recovery": settings.recovery.model_copy(
                update={"interval_s": 0.5, "orphan_after_s": 8, "backoff_s": 0.5}
            )
        }
    )
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as own:  # a client of its own: it runs in a thread
        runs = RunRecovery(own, clients.s3, fast, pool, announcer)
        service = RecoveryService(runs)
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        try:
            yield runs
        finally:
            service.stop()
            thread.join(timeout=30)


def settled(client: Any, run_id: Any, timeout_s: float = 150) -> Any:
    """The run's state once recovery is done with it: final, and not a crash still to be
    handled (a Crashed run is re-run, split or given up by the recovery service)."""
    return wait_for(
        lambda: (
            (s := client.read_flow_run(run_id).state) is not None
            and s.is_final()
            and s.name != "Crashed"
            and s
        ),
        timeout_s,
        f"flow run {run_id} to settle",
    )


def outcomes(clients: Any, settings: Any, refs: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [outcome(clients, settings.storage.results_bucket, r) for r in refs]


def exactly_one_outcome_each(clients: Any, settings: Any, refs: list[Any]) -> None:
    """The exactly-once audit: each upload has a result or a failure record, never both, and
    each outcome object was written once (the results bucket keeps versions)."""
    report = audited(clients, settings, refs)
    assert report.problems == (), report.problems


# The tiny real diffusers pipelines (CPU, eager), for the fault tests that must not rest on
# the simulated device alone.
EAGER = {"IMG2IMG_STAGES__BACKEND": "eager", "PREFECT_WORKER_HEARTBEAT_SECONDS": "1"}


@pytest.mark.parametrize("device", [SIM, EAGER], ids=["simulated", "tiny-diffusers"])
def test_a_slot_killed_mid_batch_is_replaced_and_its_run_runs_again(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path, device: dict[str, str]
) -> None:
    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    simulated = device is SIM  # slow enough a device to kill the slot after a first image
    # One image per device call: the run lasts long enough to be caught running.
    device = {**device, "IMG2IMG_STAGES__DEVICE_BATCH": "1"}
    with warm_worker(pool, log, device), recovery(client, clients, settings, pool) as rec:
        wait_for(lambda: ready(log), 120, "the slot to load")
        run, refs = submit(client, clients, settings, deployment_id, "slotkill", count=6)
        slot_pid = slot_pid_of_running(client, run.id)
        if simulated:  # killed once the first image's stage-1 output is kept
            first = keys_for(refs[0]).generate
            stage_bucket = settings.storage.stage_bucket
            wait_for(lambda: first in result_keys(clients, stage_bucket), 60, "a kept output")
        os.kill(slot_pid, signal.SIGKILL)
        state = settled(client, run.id)
        history = [s.name for s in client.read_flow_run_states(run.id)]
    assert state.is_completed(), (state, history)
    assert "Crashed" in history and "AwaitingRetry" in history
    assert rec.stats.retried >= 1
    done = outcomes(clients, settings, refs)
    assert [status for status, _ in done] == ["completed"] * 6
    exactly_one_outcome_each(clients, settings, refs)
    if simulated:
        # The run's second attempt looked for kept outputs: the first image's stage 1 was
        # not run again (no device call), the images the kill cut short were.
        assert "generate" not in done[0][1]["device_batch"], done[0][1]
        assert "generate" in done[-1][1]["device_batch"], done[-1][1]


def test_a_killed_worker_s_runs_are_found_orphaned_and_finish_on_another(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with recovery(client, clients, settings, pool) as rec:
        # One image per device call of 1.2 s: each run lasts about 6 s, long enough to be
        # caught running while the full suite's load stalls the test server's SQLite for
        # seconds (at 0.4 s a call, a run was once over before a read saw it running).
        slow = {
            **SIM,
            "IMG2IMG_STAGES__DEVICE_BATCH": "1",
            "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "1200",
        }
        with warm_worker(pool, first_log, slow) as first:
            wait_for(lambda: ready(first_log), 120, "the slot to load")
            runs = [
                submit(client, clients, settings, deployment_id, f"workerkill{i}", count=4)
                for i in range(2)
            ]
            slot_pid = slot_pid_of_running(client, runs[0][0].id)
            first.send_signal(signal.SIGKILL)  # the worker alone, as a lost host would
            first.wait(timeout=30)
            # A slot never outlives its worker.
            wait_for(lambda: not alive(slot_pid), 30, "the orphaned slot to stop")
        with warm_worker(pool, second_log, SIM):  # the replacement host
            states = [settled(client, run.id) for run, _ in runs]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    assert rec.stats.orphaned >= 1
    refs = [ref for _, batch in runs for ref in batch]
    assert [status for status, _ in outcomes(clients, settings, refs)] == ["completed"] * 8
    exactly_one_outcome_each(clients, settings, refs)


def test_a_run_sharing_a_slot_with_the_crash_is_re_run_at_once_with_no_crash_counted(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    """One slot holds two runs; the slot dies in the poisoned run's device call. That run is
    blamed (Crashed, then recovered as any crash); the other, mid-way through its own
    images, is innocent: set back to AwaitingRetry at once, with the reason, and no Crashed
    state counted against it, and it completes."""
    from prefect.client.schemas.objects import StateType

    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    env = {
        **SIM,
        "IMG2IMG_WORKER__RUNS_PER_SLOT": "2",
        # One image per device call, each 1 s: the innocent run (12 images, about 14 s) has
        # calls left when the poisoned one takes the device between two of them, even when
        # the full suite's load delays the poisoned run's claim by seconds (6 images once
        # finished first).
        "IMG2IMG_STAGES__DEVICE_BATCH": "1",
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "1000",
    }
    with warm_worker(pool, log, env), recovery(client, clients, settings, pool):
        wait_for(lambda: ready(log), 120, "the slot to load")
        innocent, innocent_refs = submit(client, clients, settings, deployment_id, "bystander", 12)
        wait_for(
            lambda: (s := client.read_flow_run(innocent.id).state) is not None and s.is_running(),
            60,
            "the innocent run to run",
        )
        poison, poison_refs = submit(
            client,
            clients,
            settings,
            deployment_id,
            "culprit",
            1,
            {**FAST, "prompt": "POISON pill"},
        )
        done = [settled(client, run.id) for run in (innocent, poison)]
    innocent_history = client.read_flow_run_states(innocent.id)
    poison_history = client.read_flow_run_states(poison.id)
    assert done[0].is_completed(), done[0].message
    assert StateType.CRASHED in {s.type for s in poison_history}
    assert StateType.CRASHED not in {s.type for s in innocent_history}, [
        (s.name, s.message) for s in innocent_history
    ]
    rerun = [s for s in innocent_history if s.name == "AwaitingRetry"]
    assert rerun and f"flow run {poison.id} was on the device" in str(rerun[0].message)
    assert "this run is re-run" in str(rerun[0].message)
    exactly_one_outcome_each(clients, settings, innocent_refs + poison_refs)


def test_a_poison_image_fails_alone_and_the_rest_of_its_batch_completes(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    from img2img.config.notify import NotifySettings
    from img2img.delivery.announce import Announcer
    from infra.local.resources import ensure_notifications
    from tests.integration.helpers import drain, png, upload

    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    # Completion messages on: the slots announce results, the recovery service the crash's
    # failure record.
    topic, app_queue = ensure_notifications(clients)
    announcer = Announcer.for_clients(
        clients, settings.model_copy(update={"notify": NotifySettings(topic_arn=topic)})
    )
    refs = []
    for i in range(8):
        meta = {**FAST, "prompt": "POISON pill" if i == 5 else "a test card", "request-id": f"r{i}"}
        refs.append(
            upload(clients, settings.storage.uploads_bucket, f"poison/{i}.png", png(), meta)
        )
    env = {**SIM, "IMG2IMG_NOTIFY__TOPIC_ARN": topic}
    with warm_worker(pool, log, env), recovery(client, clients, settings, pool, announcer) as rec:
        wait_for(lambda: ready(log), 120, "the slot to load")
        client.create_flow_run_from_deployment(
            deployment_id, parameters={"objects": [r.model_dump(mode="json") for r in refs]}
        )
        wait_for(
            lambda: all(s != "missing" for s, _ in outcomes(clients, settings, refs)),
            300,
            "every upload to have an outcome",
            interval=1.0,
        )
    results = outcomes(clients, settings, refs)
    assert [s for s, _ in results] == ["completed"] * 5 + ["failed"] + ["completed"] * 2, [
        (s, d.get("reason")) for s, d in results if s == "failed"
    ] + rec.stats.actions
    assert [s for s, _ in results] == ["completed"] * 5 + ["failed"] + ["completed"] * 2
    record = results[5][1]
    assert record["stage"] == "crashed" and record["retryable"] is True
    assert rec.stats.split >= 3 and rec.stats.gave_up == 1
    exactly_one_outcome_each(clients, settings, refs)
    # A completion message per upload, whichever process wrote its outcome. A slot killed
    # while another run on it was between sending a message and tagging the outcome as
    # announced (a victim of the poison) leaves that outcome to its re-run, which may send it
    # again (docs/delivery.md: at least once): repeats carry the same dedup_id and the same outcome,
    # so the app drops them, and no upload is announced as two different things.
    messages = drain(clients.sqs, app_queue, quiet_s=3, at_least=8)
    assert sorted({m["request_id"] for m in messages}) == [f"r{i}" for i in range(8)]
    # The audit with the messages: every upload announced, rightly; a repeat is the only
    # problem allowed (the window above).
    report = audited(clients, settings, refs, messages)
    assert [p for p in report.problems if "repeated message" not in p] == [], report.problems
    print(f"{len(messages)} completion messages for 8 uploads (repeats: {len(messages) - 8})")
    poison = next(m for m in messages if m["request_id"] == "r5")
    assert poison["outcome"] == "failure" and poison["failure"]["stage"] == "crashed"
    assert poison["failure"]["retryable"] is True

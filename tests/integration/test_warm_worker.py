"""The `img2img-warm` worker type, as a real `prefect worker start` process against a real
Prefect API and moto: resident models, crash replacement, cancel, drain, load failures."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Cancelling

from tests.conftest import AwsEnv
from tests.integration.helpers import audited, outcome
from tests.integration.warm import (
    RecordingGroup,
    create_pool_and_deployment,
    final_state,
    ready,
    slot_pid_of_running,
    state_of,
    submit,
    wait_for,
    warm_worker,
)

pytestmark = pytest.mark.usefixtures("prefect_api")

SLOW_SIM = {
    "IMG2IMG_STAGES__BACKEND": "simulated",
    "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "1500",
    "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "1500",
    "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0.2",
}


@contextmanager
def loaded_worker(
    client: Any, tmp_path: Path, env: dict[str, str]
) -> Iterator[tuple[Any, Path, Any]]:
    """A fresh pool and deployment, and a warm worker on it whose slot has loaded its models;
    yields (deployment id, worker log, worker process)."""
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    with warm_worker(pool, log, env) as proc:
        wait_for(lambda: ready(log), 120, "the slot to load")
        yield deployment_id, log, proc


def test_the_worker_type_is_registered_with_its_job_template() -> None:
    from prefect.plugins import load_prefect_collections
    from prefect.workers.base import BaseWorker

    from deployments.worker.warm_worker import WarmWorker

    load_prefect_collections()
    assert BaseWorker.get_worker_class_from_type("img2img-warm") is WarmWorker
    shipped = Path("deployments/worker/base-job-templates/img2img-warm.json")
    assert json.loads(shipped.read_text()) == WarmWorker.get_default_base_job_template()


def test_models_load_once_per_slot_across_runs(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    with warm_worker(pool, log, {}):  # eager backend, tiny real diffusers models
        runs = [submit(client, clients, settings, deployment_id, f"warm{i}") for i in range(3)]
        states = [final_state(client, run.id) for run, _ in runs]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    workers = [
        outcome(clients, settings.storage.results_bucket, refs[0])[1]["worker"] for _, refs in runs
    ]
    assert len({w["pid"] for w in workers}) == 1, workers
    assert all(w["model_loads"] == 2 for w in workers), workers  # img2img + upscale, once
    assert log.read_text().count("2 model loads") == 1


def test_a_crashed_slot_marks_its_run_crashed_and_is_replaced(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    clients, settings = aws
    with loaded_worker(client, tmp_path, SLOW_SIM) as (deployment_id, log, _proc):
        run, _ = submit(client, clients, settings, deployment_id, "crash", count=3)
        slot_pid = slot_pid_of_running(client, run.id)
        os.kill(slot_pid, signal.SIGKILL)

        crashed = final_state(client, run.id)
        assert crashed.is_crashed()
        assert f"pid {slot_pid}" in crashed.message and "SIGKILL" in crashed.message
        wait_for(lambda: ready(log, 2), 120, "a replacement slot")
        after, refs = submit(client, clients, settings, deployment_id, "after-crash")
        assert final_state(client, after.id).is_completed()
    worker = outcome(clients, settings.storage.results_bucket, refs[0])[1]["worker"]
    assert worker["pid"] != slot_pid


def test_cancelling_a_running_run_stops_it_and_records_the_rest(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    clients, settings = aws
    # One image per device call, so there are calls left to stop when the cancel lands.
    one_by_one = {**SLOW_SIM, "IMG2IMG_STAGES__DEVICE_BATCH": "1"}
    with loaded_worker(client, tmp_path, one_by_one) as (deployment_id, _log, _proc):
        run, refs = submit(client, clients, settings, deployment_id, "cancel", count=4)
        wait_for(lambda: state_of(client, run.id).is_running(), 60, "the run to start")
        client.set_flow_run_state(run.id, Cancelling(message="operator"), force=True)
        state = final_state(client, run.id, timeout_s=90)
    assert state.is_cancelled(), state
    outcomes = [outcome(clients, settings.storage.results_bucket, r) for r in refs]
    assert all(status in ("completed", "failed") for status, _ in outcomes)  # nothing lost
    cancelled = [doc for status, doc in outcomes if status == "failed"]
    assert cancelled and all(d["stage"] == "cancelled" and d["retryable"] for d in cancelled)


def test_a_cancel_during_the_last_device_call_still_ends_the_run(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    """The four images go through each stage in one call; the cancel lands during stage
    2's, which cannot stop halfway: every image completes, and the run ends Cancelled
    instead of staying Cancelling (counted as running, its host never let go)."""
    clients, settings = aws
    with loaded_worker(client, tmp_path, SLOW_SIM) as (deployment_id, log, _proc):
        run, refs = submit(client, clients, settings, deployment_id, "late-cancel", count=4)
        wait_for(lambda: "generate done" in log.read_text(), 60, "stage 1 to finish")
        client.set_flow_run_state(run.id, Cancelling(message="operator"), force=True)
        state = final_state(client, run.id, timeout_s=90)
    assert state.is_cancelled(), state
    assert "every image has its outcome" in str(state.message)
    outcomes = [outcome(clients, settings.storage.results_bucket, r)[0] for r in refs]
    assert outcomes == ["completed"] * 4


def test_sigterm_drains_running_runs_and_takes_no_new_ones(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    clients, settings = aws
    with loaded_worker(client, tmp_path, SLOW_SIM) as (deployment_id, log, proc):
        run, _ = submit(client, clients, settings, deployment_id, "drain", count=2)
        wait_for(lambda: state_of(client, run.id).is_running(), 60, "the run to start")
        os.kill(proc.pid, signal.SIGTERM)
        # Runs created once the drain has begun stay for another worker (one created in the
        # same instant may still be claimed: the signal is handled in the worker's loop).
        wait_for(lambda: "draining" in log.read_text(), 30, "the drain to begin")
        later, _ = submit(client, clients, settings, deployment_id, "after-sigterm")
        proc.wait(timeout=90)
        assert state_of(client, run.id).is_completed()
        assert state_of(client, later.id).is_scheduled()
    assert "draining" in log.read_text()


def test_a_slot_that_cannot_load_says_why_and_the_others_keep_working(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    env = {
        "IMG2IMG_WORKER__DEVICES": '["cpu", "cuda:0"]',
        "IMG2IMG_WORKER__RESTART_BACKOFF_S": "60",
    }
    with warm_worker(pool, log, env):
        wait_for(lambda: "could not load its models" in log.read_text(), 120, "the failure")
        run, _ = submit(client, clients, settings, deployment_id, "one-slot")
        assert final_state(client, run.id).is_completed()
    text = log.read_text()
    assert "slot 1 (cuda:0) could not load its models: ModelLoadError" in text
    assert "device 'cuda:0'" in text
    assert "slot 0 (cpu): ready" in text


def test_a_slot_that_hangs_while_loading_is_killed_after_the_start_timeout(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    pool, _ = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    env = {
        **SLOW_SIM,
        "IMG2IMG_STAGES__SIMULATED__LOAD_S": "600",  # a load that never ends
        "IMG2IMG_WORKER__SLOT_START_TIMEOUT_S": "4",
        "IMG2IMG_WORKER__RESTART_BACKOFF_S": "60",
    }
    with warm_worker(pool, log, env):
        wait_for(
            lambda: "did not load its models within 4 s" in log.read_text(), 120, "the timeout"
        )
        wait_for(lambda: "retrying in 60 s" in log.read_text(), 30, "the back-off")


def test_the_pool_refuses_env_job_variables_with_a_reason(client: SyncPrefectClient) -> None:
    """Slots start before runs arrive, so a run's `env` could not be honoured: the Prefect
    API refuses it, at deploy time and for a single run, naming the field."""
    from prefect.exceptions import PrefectHTTPStatusError

    shipped = json.loads(
        Path("deployments/worker/base-job-templates/img2img-warm.json").read_text()
    )
    assert "slot processes" in shipped["variables"]["properties"]["env"]["description"]
    pool, deployment_id = create_pool_and_deployment(client, template=shipped)
    flow_id = client.create_flow_from_name("img2img-pipeline")
    with pytest.raises(PrefectHTTPStatusError, match=r"field 'env'.*expected to be empty"):
        client.create_deployment(
            flow_id=flow_id,
            name=f"{pool}-env",
            entrypoint="flows.pipeline.img2img_pipeline",
            work_pool_name=pool,
            job_variables={"env": {"IMG2IMG_STAGES__BACKEND": "simulated"}},
        )
    with pytest.raises(PrefectHTTPStatusError, match=r"field 'env'.*expected to be empty"):
        client.create_flow_run_from_deployment(
            deployment_id, parameters={"objects": []}, job_variables={"env": {"A": "1"}}
        )
    # Labels and a name are still the run's own.
    run = client.create_flow_run_from_deployment(
        deployment_id, parameters={"objects": []}, job_variables={"labels": {"team": "ml"}}
    )
    assert run.job_variables == {"labels": {"team": "ml"}}
    client.delete_flow_run(run.id)


def _shell(script: str) -> dict[str, Any]:
    return {"prefect.deployments.steps.run_shell_script": {"script": script}}


def _deployment(
    client: Any,
    pool: str,
    name: str,
    flow: str = "img2img-pipeline",
    entrypoint: str = "flows.pipeline.img2img_pipeline",
    steps: list[dict[str, Any]] | None = None,
) -> Any:
    """A deployment in `pool`, as anyone holding the API credential could register one."""
    return client.create_deployment(
        flow_id=client.create_flow_from_name(flow),
        name=f"{pool}-{name}",
        entrypoint=entrypoint,
        work_pool_name=pool,
        pull_steps=steps,
    )


def test_a_deployment_with_a_foreign_pull_step_or_flow_is_refused_and_never_run(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    """Whoever may write deployments could register one in the pool with a shell step: the
    worker fails its runs with the reason before any slot sees them, and the step never
    runs. A release deployment on the same worker still runs."""
    clients, settings = aws
    marker = tmp_path / "pwned"
    with loaded_worker(client, tmp_path, SLOW_SIM) as (deployment_id, _log, _proc):
        pool = str(client.read_deployment(deployment_id).work_pool_name)
        shell = _deployment(client, pool, "shell", steps=[_shell(f"touch {marker}")])
        other = _deployment(client, pool, "other", flow="not-ours")
        moved = _deployment(client, pool, "moved", entrypoint="os:system")
        runs = {
            name: client.create_flow_run_from_deployment(d, parameters={"objects": []})
            for name, d in (("shell", shell), ("other", other), ("moved", moved))
        }
        states = {name: final_state(client, run.id) for name, run in runs.items()}
        good, _ = submit(client, clients, settings, deployment_id, "after-refusals")
        assert final_state(client, good.id).is_completed()

    assert all(s.is_failed() for s in states.values()), {n: s.type for n, s in states.items()}
    assert states["shell"].message.startswith("refused by worker ")
    assert "pull steps ['prefect.deployments.steps.run_shell_script']" in states["shell"].message
    assert "flow 'not-ours' is not one this release runs" in states["other"].message
    assert "entrypoint 'os:system' is not the release's" in states["moved"].message
    assert not marker.exists()


def test_a_slot_loads_only_the_allow_listed_flow_and_checks_the_deployment_again(
    client: SyncPrefectClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot's own check (a deployment changed after the worker's): a foreign pull step
    is refused there too, and a release deployment's flow comes from the allow-list."""
    from deployments.worker import slot_process
    from deployments.worker.run_guard import RunGuard, RunRefused, release_steps
    from img2img.config.worker import RELEASE_FLOWS

    pool, release = create_pool_and_deployment(client)
    stepped = _deployment(client, pool, "release-steps", steps=release_steps(str(tmp_path)))
    shell = _deployment(client, pool, "shell", steps=[_shell("true")])
    monkeypatch.setattr(slot_process, "_guard", RunGuard(RELEASE_FLOWS, str(tmp_path)))
    monkeypatch.chdir(Path.cwd())  # restored after the slot's chdir

    def run_of(deployment_id: Any) -> Any:
        return client.create_flow_run_from_deployment(deployment_id, parameters={"objects": []})

    assert slot_process._flow_for(run_of(release)).name == "img2img-pipeline"
    assert slot_process._flow_for(run_of(stepped)).name == "img2img-pipeline"
    assert Path.cwd() == tmp_path  # the release's working directory, set by the slot
    with pytest.raises(RunRefused, match="run_shell_script"):
        slot_process._flow_for(run_of(shell))


def test_a_slot_past_its_memory_bound_is_replaced_while_runs_go_on(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path
) -> None:
    """A growth bound of 1 MB (a slot grows more than that in its first run): every slot is
    recycled soon after it starts serving, again and again, while runs keep arriving. The
    fresh slot loads before the old one stops, so no run crashes and every upload has one
    outcome, served by more than one slot process; the worker tells the pool, and the
    autoscaler counts each recycle once however often it reads it."""
    from deployments.services.autoscaler import Autoscaler
    from img2img.config.scaling import ScalingSettings

    clients, settings = aws
    env = {
        **SLOW_SIM,
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "200",
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "200",
        "IMG2IMG_WORKER__RECYCLE_GROWTH_MB": "1",
    }
    pool, deployment_id = create_pool_and_deployment(client)
    log = tmp_path / "worker.log"
    with warm_worker(pool, log, env):
        wait_for(lambda: ready(log), 120, "the slot to load")
        runs = []
        for i in range(8):
            runs.append(submit(client, clients, settings, deployment_id, f"recycle{i}", count=2))
            if i == 2:  # the rest arrive once the first slot has handed over, while its
                # successors grow past the bound and are recycled in turn
                wait_for(lambda: "recycled: its memory grew" in log.read_text(), 120, "a recycle")
        states = [final_state(client, run.id, timeout_s=180) for run, _ in runs]
        text = log.read_text()
    assert all(s.is_completed() for s in states), [(s.name, s.message) for s in states]
    refs = [r for _, batch in runs for r in batch]
    report = audited(clients, settings, refs)
    assert (report.counts()["lost"], report.counts()["duplicated"]) == (0, 0), report.problems
    pids = {outcome(clients, settings.storage.results_bucket, r)[1]["worker"]["pid"] for r in refs}
    assert len(pids) >= 2, pids
    assert "replacing it" not in text  # no slot died: each was asked to stop
    scaler = Autoscaler(client, pool, ScalingSettings(), RecordingGroup())
    counted = wait_for(lambda: scaler.observe() and scaler.recent_recycles(), 30, "the events")
    scaler.observe()  # reads the same minute again
    assert scaler.recent_recycles() == counted
    assert counted <= log.read_text().count("recycled: its memory grew")


@pytest.mark.parametrize("cores", [None, "0-1"], ids=["loads-first", "neuron-cores"])
def test_a_slot_is_recycled_after_its_runs(
    aws: AwsEnv, client: SyncPrefectClient, tmp_path: Path, cores: str | None
) -> None:
    """After recycle_after_runs (no jitter) the slot is replaced, and the next run is served
    by the fresh process. Where two processes may share the device, the fresh slot is ready
    before the old one stops; on NeuronCores (a core group: one process per core), the old
    one exits first and the fresh one loads on its cores."""
    clients, settings = aws
    env = {
        **SLOW_SIM,
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "100",
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "100",
        "IMG2IMG_WORKER__RECYCLE_AFTER_RUNS": "2",
        "IMG2IMG_WORKER__RECYCLE_JITTER": "0",
        "IMG2IMG_WORKER__RECYCLE_GROWTH_MB": "0",
    }
    if cores is not None:
        env["IMG2IMG_WORKER__CORE_GROUPS"] = json.dumps([cores])
    with loaded_worker(client, tmp_path, env) as (deployment_id, log, _proc):
        first = [submit(client, clients, settings, deployment_id, f"runs{i}") for i in range(2)]
        assert all(final_state(client, run.id).is_completed() for run, _ in first)
        wait_for(lambda: "recycled: it served 2 runs" in log.read_text(), 60, "the recycle")
        wait_for(lambda: ready(log, 2), 60, "the fresh slot")
        later, refs = submit(client, clients, settings, deployment_id, "after-recycle")
        assert final_state(client, later.id).is_completed()
        text = log.read_text()
    results = settings.storage.results_bucket
    before = {outcome(clients, results, r[0])[1]["worker"]["pid"] for _, r in first}
    after = outcome(clients, results, refs[0])[1]["worker"]["pid"]
    assert len(before) == 1 and after not in before
    began = text.index("recycling it")
    fresh_ready = text.index(": ready (pid", began)
    ended = text.index("recycled: it served 2 runs")
    if cores is None:
        assert began < fresh_ready < ended, text[began:]
    else:
        assert "finishes its runs and exits, then a fresh slot loads" in text
        assert began < ended < fresh_ready, text[began:]
    assert "replacing it" not in text

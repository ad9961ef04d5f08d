"""A warm slot: a long-lived process that owns a share of the device, loads the stage models
once, and runs flow runs in threads, as many as the worker hands it (pipelining).

The messages it exchanges with its worker are the typed ones of `slot_protocol`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

from deployments.worker.run_guard import RunGuard, RunRefused, guard_from
from deployments.worker.slot_protocol import (
    CRASHED,
    Beat,
    CancelRequest,
    LoadFailed,
    OnDevice,
    Ready,
    RunDone,
    RunRequest,
    SlotMessage,
    StopRequest,
)
from img2img.config.lanes import LaneSettings
from img2img.slots import claims
from img2img.slots.memory import limit_malloc_arenas, own_rss_mb

log = logging.getLogger("img2img.slot")


def slot_main(conn: Connection, index: int, env: dict[str, str]) -> None:
    """Entry point of a slot process."""
    os.environ.update(env)
    # A terminal's Ctrl-C reaches the whole process group; the worker decides when slots stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s slot-{index} %(levelname)s %(message)s"
    )
    for noisy in ("httpx", "httpcore", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    send_lock = threading.Lock()

    def send(message: SlotMessage) -> None:
        with send_lock:
            conn.send(message)

    try:
        from img2img.config.settings import load_settings

        start = time.perf_counter()
        settings = load_settings()
        # Before torch or anything else starts a thread: each thread allocates from one of
        # at most this many malloc arenas (glibc), so what one run frees the next reuses.
        limit_malloc_arenas(settings.worker.malloc_arenas)
        from deployments.worker.api_logs import limit_api_logs
        from img2img.aws.clients import clients_from_settings
        from img2img.models.loaded import configure_torch, process_models
        from img2img.pipeline.topology import BOTH

        limit_api_logs(settings.monitor.api_log_level)
        configure_torch(settings.stages)
        # The process-wide model cache the pipeline's tasks use too: what is loaded here is
        # what every run of this slot gets.
        models = process_models()
        stages = tuple(settings.worker.stages or BOTH)
        call_s = models.warm_up(settings.stages, clients_from_settings(settings.aws).s3, stages)
    except Exception as exc:
        send(LoadFailed(reason=f"{type(exc).__name__}: {exc}"))
        return
    models.device_lock = ReportingDeviceLock(send, lane_priority(settings.lanes))
    global _guard
    _guard = guard_from(settings.worker.allowed_flows, settings.worker.project_dir)
    _prepare_runs()
    send(
        Ready(
            pid=os.getpid(),
            loads=models.loads,
            load_s=round(time.perf_counter() - start, 3),
            call_s=call_s,
            rss_mb=own_rss_mb(),
        )
    )
    threading.Thread(
        target=_beat,
        args=(send, settings.worker.progress_beat_s),
        name="progress-beat",
        daemon=True,
    ).start()

    from img2img.slots.cancel import registry

    # The runs execute on long-lived threads, as many as the slot may hold at once, not on a
    # thread per run: glibc gives each new thread a malloc arena (up to 8 per core), and a
    # run's torch and image buffers freed in many arenas stayed resident (+747 MB an hour
    # per slot at 0.5 uploads/s before, +15 after; `img2img bench soak`).
    runs = ThreadPoolExecutor(max_workers=settings.worker.runs_per_slot, thread_name_prefix="run")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The worker is gone (killed, host lost). A slot never outlives its worker: the
            # runs it holds are recovered elsewhere, so it stops now rather than finish them
            # with nobody to report to.
            log.error("the worker went away; stopping this slot and its runs now")
            os._exit(70)
        if isinstance(message, RunRequest):
            if message.claimed_at is not None:
                claims.record(message.run_id, message.claimed_at)
            runs.submit(_execute, message.run_id, message.flow_run, send)
        elif isinstance(message, CancelRequest):
            registry().request(message.run_id)
        elif isinstance(message, StopRequest):
            break
    runs.shutdown(wait=True)


def _prepare_runs() -> None:
    """What a slot's first run would otherwise pay before its flow starts (about 2 s, once
    per slot, on every new host; in a split topology, added to the hand-off): the flows'
    modules imported, the runtime the tasks share built (settings, AWS clients from the
    credentials block). And what every run would pay: Prefect's engine watches each
    deployment run for suspension with a thread, an event loop and an events subscription
    of its own, waited for before the flow starts; nothing here suspends a run (a warm
    slot cannot give its run back and pick it up later), so the slot does without. Done
    before the slot says it is ready; a failure here is the first run's to report, so it is
    only logged."""
    try:
        import flows.split  # noqa: F401  (imports the pipeline flow too)
        from deployments.worker.prefect_internals import skip_suspension_observer
        from tasks.runtime import get_runtime

        skip_suspension_observer()
        get_runtime()
    except Exception as exc:
        log.warning("could not prepare for runs ahead of the first one: %s", exc)


def _beat(send: Any, every_s: float) -> None:
    """Send the device's last progress to the worker, for ever (a daemon thread). A process
    that stops (SIGSTOP, a lock held for ever) stops beating; a device call that never
    returns leaves the beats going with the same progress time: the worker tells both."""
    from img2img.slots.progress import recorder

    progress = recorder()
    while True:
        last = progress.snapshot()
        try:
            send(Beat(at=last.at, stage=last.stage, on_device=last.on_device, rss_mb=own_rss_mb()))
        except (OSError, ValueError):
            return  # the worker is gone; the main loop stops the slot
        time.sleep(every_s)


def lane_priority(lanes: LaneSettings) -> Callable[[str | None], int]:
    """A run's turn on the device from its work queue: its lane's priority (lanes off, or
    a queue that is no lane: all the same, first come first served)."""
    known = {lane.name: lane.priority for lane in lanes.lanes} if lanes.enabled else {}
    return lambda queue: known.get(queue or "", 0)


class ReportingDeviceLock:
    """The slot's device lock, which also tells the worker which flow run holds it. When the
    slot dies, only that run is blamed (it crashed); the others it held at the time are
    victims and are re-run without counting a crash against their images. Taking and giving
    back the device is progress (`img2img.slots.progress`). Waiting calls take the device
    by their run's lane (`img2img.slots.device_turns`): an interactive call before a bulk
    one."""

    def __init__(self, send: Any, priority_of: Callable[[str | None], int]) -> None:
        from img2img.slots.device_turns import PriorityLock
        from img2img.slots.progress import recorder

        self._lock = PriorityLock()
        self._send = send
        self._priority_of = priority_of
        self._progress = recorder()

    def __enter__(self) -> ReportingDeviceLock:
        from prefect.context import FlowRunContext
        from prefect.runtime import flow_run

        context = FlowRunContext.get()
        queue = context.flow_run.work_queue_name if context and context.flow_run else None
        self._lock.acquire(self._priority_of(queue))
        self._send(OnDevice(run_id=str(flow_run.id) if flow_run.id else None))
        self._progress.device(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.device(False)
        self._send(OnDevice(run_id=None))
        self._lock.release()

    def yield_to_waiting(self) -> bool:
        """Between two calls of the holder's stage: a more urgent lane's waiting run takes
        the device for its stage, then it comes back here (told to the worker again)."""
        if not self._lock.yield_to_waiting():
            return False
        from prefect.runtime import flow_run

        self._send(OnDevice(run_id=str(flow_run.id) if flow_run.id else None))
        # Back on the device: progress, not one more holder (the run that took it
        # meanwhile counted itself in and out; this one never left the count).
        self._progress.mark()
        return True


_flows: dict[UUID, Any] = {}
_flows_lock = threading.Lock()
_guard: RunGuard | None = None  # set once the slot is ready


def _flow_for(flow_run: Any) -> Any:
    """The run's flow, loaded once per deployment (the next runs reuse it: the code is
    imported for good anyway, and the server is spared a deployment read on every run).
    Only a release flow is loaded, from the allow-listed entrypoint, never from what the
    deployment stores, and no pull step runs here: the deployment is checked again (it may
    have changed since the worker checked it) and the release's working directory set."""
    from prefect.client.orchestration import get_client
    from prefect.flows import load_flow_from_entrypoint

    assert _guard is not None
    if flow_run.deployment_id is None:
        raise RunRefused("the run has no deployment: a warm worker runs deployments only")
    with _flows_lock:
        key = flow_run.deployment_id
        if key not in _flows:
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment(key)
                flow_name = client.read_flow(deployment.flow_id).name
            reason = _guard.refusal(flow_name, deployment.entrypoint, deployment.pull_steps)
            if reason is not None:
                raise RunRefused(reason)
            if deployment.pull_steps:
                os.chdir(_guard.directory)
            entrypoint = _guard.entrypoint(flow_name)
            _flows[key] = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
        return _flows[key]


def _refuse(run_id: str, reason: str) -> str:
    """Fail a refused run with the reason (the worker checks first: this is the race of a
    deployment changed in between); the state it ended in."""
    from prefect.client.orchestration import get_client
    from prefect.states import Failed

    log.error("flow run %s refused: %s", run_id, reason)
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                UUID(run_id), Failed(message=f"refused: {reason}"), force=True
            )
        return "FAILED"
    except Exception as exc:  # the worker marks it crashed instead: still never run
        log.error("could not fail refused run %s: %s", run_id, exc)
        return CRASHED


_threads = threading.local()


def _keep_client() -> None:
    """One Prefect client per run thread, for the slot's life: Prefect's engine takes the
    client of the current context when there is one (`SyncClientContext.get_or_create`),
    else builds a new one (and a new connection) for every run."""
    if getattr(_threads, "client", None) is None:
        from prefect.context import SyncClientContext

        context = SyncClientContext()
        context.__enter__()  # left open: the thread serves runs until the slot exits
        _threads.client = context


def _execute(run_id: str, given: Any, send: Any) -> None:
    """Run one flow run in this process, with the models already resident. `given`: the run
    as the worker read it (Prefect's engine reads it again as it starts the run, so the
    slot's own read would be the third); None: read it here."""
    from prefect.flow_engine import load_flow_run, run_flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    try:
        _keep_client()
        flow_run = given if given is not None else load_flow_run(UUID(run_id))
        flow = _flow_for(flow_run)
        # No flow-run heartbeat events: Prefect emits one at every run's start (and every
        # 180 s), an event and seven rows per run that nothing here reads; a dead slot is
        # told by its worker's heartbeat and its own beats (the recovery service, the
        # watchdog).
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            state = run_flow(flow, flow_run=flow_run, return_type="state")
        send(RunDone(run_id=run_id, state=str(state.type.value)))  # type: ignore[union-attr]
    except RunRefused as exc:
        send(RunDone(run_id=run_id, state=_refuse(run_id, str(exc))))
    except BaseException as exc:
        log.exception("flow run %s raised out of the engine", run_id)
        send(RunDone(run_id=run_id, state=CRASHED, error=f"{type(exc).__name__}: {exc}"))

"""The `img2img-warm` Prefect worker type: flow runs execute inside long-lived slot
processes that keep the stage models resident, instead of a fresh process per run.

    prefect work-pool create inf2 --type img2img-warm \\
        --base-job-template deployments/worker/base-job-templates/img2img-warm.json
    prefect worker start --pool inf2 --type img2img-warm

Slots come from the `IMG2IMG_WORKER__*` settings (one per NeuronCore group, GPU or CPU share).
SIGTERM drains: the worker stops taking runs, lets the running ones finish (bounded by
`worker.drain_timeout_s`) and exits, which is what scale-in needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from typing import Any
from uuid import UUID, uuid4

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import Abort, ObjectNotFound
from prefect.states import AwaitingRetry, Cancelled, Crashed, Failed
from prefect.utilities.engine import propose_state
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)
from pydantic import Field

from deployments.worker import prefect_internals as internals
from deployments.worker.api_logs import limit_api_logs
from deployments.worker.names import HOST_SEPARATOR, RECYCLED_EVENT, UNHEALTHY_EVENT, host_of
from deployments.worker.run_guard import guard_from
from deployments.worker.run_starts import RunStartStream, claim_delay_s, run_start_filter
from deployments.worker.slot_pool import SlotPool
from deployments.worker.slot_protocol import CRASHED, CancelRequest, RunRequest, SlotIdentifier
from img2img.config.worker import WorkerSettings
from img2img.pipeline.topology import stages_for_pool
from img2img.slots.lane_room import admit, is_first_lane, reserve_of

ACQUIRE_POLL_S = 0.1
# A run of a lower lane claimed without a place left for it waits this long, then goes back.
PLACE_WAIT_S = 1.0
# A drained worker asks Prefect's CLI for its clean exit (SIGINT); if the process is still
# there this long after, it stops its slots and exits itself (see `_exit_after`).
EXIT_GRACE_S = 30.0


def slot_base_env() -> dict[str, str]:
    """The worker's environment plus its Prefect connection, for the slot processes (the
    API URL may come from a profile or a test harness rather than the environment)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL

    env = dict(os.environ)
    for setting in (PREFECT_API_URL, PREFECT_API_KEY, PREFECT_API_AUTH_STRING):
        value = setting.value()
        if value:
            env[setting.name] = str(
                value.get_secret_value() if hasattr(value, "get_secret_value") else value
            )
    return env


# BaseWorker reads a run's deployment for every run it submits; a warm worker reads each
# deployment again when the events stream says it changed, and, while the stream is down,
# at most once a minute.
DEPLOYMENT_TTL_S = 60.0


class WarmJobConfiguration(BaseJobConfiguration):
    """Nothing to configure per run: the slot's models and device are the worker's."""


ENV_REFUSED = (
    "Not supported on this pool, so refused: a warm worker runs flows in slot processes "
    "started before any run arrives (models loaded), so a run cannot change their "
    "environment. Set variables on the host (the worker's environment, e.g. the "
    "EnvironmentFile of its systemd unit), or deploy to a process pool."
)


class WarmVariables(BaseVariables):
    """The base variables (labels, name). `env` is refused by the pool's template
    (`maxProperties: 0`): the slots are started before any run arrives, so a run cannot set
    their environment; the Prefect API refuses a deployment or a run that sets it."""

    env: dict[str, str | None] = Field(
        default_factory=dict,
        title="Environment Variables",
        description=ENV_REFUSED,
        json_schema_extra={"maxProperties": 0},
    )


class WarmWorkerResult(BaseWorkerResult):
    """Outcome of one flow run on a slot."""


def _gpus(stage_device: str) -> int:
    """GPUs this host has, asked only when the stages run on `cuda` (torch is imported for
    it, once, at worker start)."""
    if not stage_device.startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.device_count())


class WarmWorker(BaseWorker[WarmJobConfiguration, WarmVariables, WarmWorkerResult]):
    type = "img2img-warm"
    job_configuration = WarmJobConfiguration
    job_configuration_variables = WarmVariables
    _description = (
        "Runs img2img flow runs inside long-lived slot processes (one per NeuronCore group, "
        "GPU or CPU share) that keep the stage models loaded across runs."
    )
    _display_name = "img2img warm worker"
    _documentation_url = (
        "https://github.com/img2img/img2img/blob/main/docs/architecture/warm-worker.md"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from img2img.config.settings import load_settings
        from img2img.slots.layout import one_slot_per_gpu

        loaded = load_settings()
        settings = one_slot_per_gpu(
            loaded.worker, loaded.stages.device, _gpus(loaded.stages.device)
        )
        if kwargs.get("name"):
            # Unique per process: the recovery service tells a dead worker's runs by its
            # silent heartbeat, which a restarted worker of the same name would hide.
            kwargs["name"] = f"{kwargs['name']}{HOST_SEPARATOR}{uuid4().hex[:8]}"
        if kwargs.get("limit") is None:
            kwargs["limit"] = settings.slot_count() * settings.runs_per_slot
        super().__init__(*args, **kwargs)
        self.worker_settings: WorkerSettings = settings
        self.run_guard = guard_from(settings.allowed_flows, settings.project_dir)
        self._flow_names: dict[UUID, str] = {}  # flow id → name (a flow's name never changes)
        self.lanes = loaded.lanes
        self.api_log_level = loaded.monitor.api_log_level
        self._configuration: WarmJobConfiguration | None = None
        self.pool: SlotPool | None = None
        self.draining = False
        # Waiting for a slot's answer parks a thread; these have their own limiter, sized for
        # every run the worker may hold plus a cancel each, so anyio's shared default of 40
        # threads never makes a run wait for a thread (12 slots x 3 runs is already 36).
        self._waits = anyio.CapacityLimiter(2 * settings.slot_count() * settings.runs_per_slot)
        self._cancelled: set[str] = set()
        self._cancelling: set[str] = set()  # runs told to stop, until they end
        self._observer: Any = None  # Prefect's FlowRunCancellingObserver, once started
        self.run_starts: RunStartStream | None = None  # once the worker knows its pool
        self.deployment_reads: internals.DeploymentReads | None = None  # once set up
        # A run was heard while no slot had room: the next slot to free polls at once.
        self._heard_while_full = False

    # -- lifecycle ------------------------------------------------------------------------

    async def setup(self) -> None:
        await super().setup()
        limit_api_logs(self.api_log_level)
        self.deployment_reads = internals.DeploymentReads(
            self.client, DEPLOYMENT_TTL_S, trusted=self._stream_up
        )
        # The models its slots load: the worker's setting, else its pool's stage(s).
        stages = self.worker_settings.stages or list(stages_for_pool(self._work_pool_name))
        self._logger.info("slots load the %s model(s)", " and ".join(stages))
        env = {**slot_base_env(), "IMG2IMG_WORKER__STAGES": json.dumps(stages)}
        self.pool = SlotPool(
            self.worker_settings,
            env,
            self._logger,
            on_unhealthy=self._unhealthy,
            on_recycle=self._recycled,
            reserve=reserve_of(self.lanes, self.worker_settings.runs_per_slot),
        )
        self.pool.start_all()
        internals.start_in_worker(self, self._watch_cancellations)
        internals.start_in_worker(self, self._watch_sigterm)
        if self.worker_settings.run_start_events:
            internals.start_in_worker(self, self._listen_for_runs)

    async def _watch_sigterm(self) -> None:
        """SIGTERM drains (see `begin_drain`); anyio's signal receiver, in the worker's loop."""
        try:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    self.begin_drain()
        except (NotImplementedError, ValueError, RuntimeError):
            # Not the main thread (a worker driven in-process, as in some tests): no drain.
            return

    def _unhealthy(self, reason: str) -> None:
        """Every slot is given up (called from the pool's thread): say so where operators and
        the autoscaler look. The worker then takes no runs, gives back those waiting for a
        slot, and stops heartbeating, so Prefect lists it offline; the autoscaler replaces
        its host on the event."""
        self._logger.error("unhealthy, taking no more runs: %s", reason)
        self._emit(UNHEALTHY_EVENT, {"reason": reason})

    def _recycled(self, slot: str, reason: str) -> None:
        """A slot was recycled (called from the pool's thread): the autoscaler counts these
        for the fleet view and /metrics, and an alert fires when they come often."""
        self._emit(RECYCLED_EVENT, {"slot": slot, "reason": reason})

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        """An event about this host, related to its work pool (what the autoscaler reads and
        the alerts match on)."""
        from prefect.events import emit_event

        try:
            pool = self.work_pool  # raises if the worker never synced: no pool to name
            emit_event(
                event=event,
                resource={
                    "prefect.resource.id": f"img2img.host.{host_of(self.name)}",
                    "prefect.resource.name": host_of(self.name),
                },
                related=[
                    {
                        "prefect.resource.id": f"prefect.work-pool.{pool.id}",
                        "prefect.resource.role": "work-pool",
                        "prefect.resource.name": pool.name,
                    }
                ],
                payload={
                    "worker": self.name,
                    "host": host_of(self.name),
                    "pool": pool.name,
                    **payload,
                },
            )
        except Exception as exc:  # advisory: the worker's own log says it too
            self._logger.warning("could not emit %s: %s", event, exc)

    @property
    def unhealthy(self) -> str | None:
        return self.pool.unhealthy if self.pool is not None else None

    async def sync_with_backend(self) -> None:
        # An unhealthy worker stops heartbeating: Prefect lists it offline, and the recovery
        # service releases any run still labelled with it.
        if self.unhealthy is not None:
            channel = getattr(self, "_worker_channel", None)  # BaseWorker's, if it has one
            if channel is not None:
                channel.stop()
            return
        await super().sync_with_backend()

    async def teardown(self, *exc_info: Any) -> None:
        if self.pool is not None:
            await anyio.to_thread.run_sync(self.pool.stop, 60.0)
        await super().teardown(*exc_info)

    def begin_drain(self) -> None:
        """First SIGTERM: stop taking runs, finish the running ones, exit. Second: exit now."""
        if self.draining:
            self._logger.warning("second SIGTERM: stopping without waiting for runs")
            os.kill(os.getpid(), signal.SIGINT)
            return
        self.draining = True
        self._logger.info(
            "SIGTERM: draining (no new runs; waiting up to %.0f s for %d running)",
            self.worker_settings.drain_timeout_s,
            self.running_count(),
        )
        internals.start_in_worker(self, self._drain_then_exit)  # held by the task group

    async def _drain_then_exit(self) -> None:
        await self.wait_idle(self.worker_settings.drain_timeout_s)
        self._logger.info("drained; stopping")
        self._exit_after(EXIT_GRACE_S)
        os.kill(os.getpid(), signal.SIGINT)  # the CLI's handler turns this into a clean exit

    def _exit_after(self, grace_s: float) -> None:
        """Exit the process `grace_s` from now unless the clean exit ended it first. The
        CLI's SIGINT handling cancels the worker's main task, and on a loaded host that
        cancellation was seen not to end it: the process stayed, its loops idle, every time
        under a CPU hog (`test_sigterm_drains_running_runs_and_takes_no_new_ones`). Its runs
        are drained by now, so nothing is lost: the slots are stopped and the process
        exits 0, saying so."""

        def exit_now() -> None:
            self._logger.warning(
                "still running %.0f s after the drain: stopping the slots and exiting", grace_s
            )
            if self.pool is not None:
                self.pool.stop(10.0)
            os._exit(0)

        timer = threading.Timer(grace_s, exit_now)
        timer.daemon = True
        timer.start()

    def running_count(self) -> int:
        try:
            return int(self.limiter.borrowed_tokens)
        except RuntimeError:  # not set up yet
            return 0

    async def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.running_count() > 0 and time.monotonic() < deadline:
            await anyio.sleep(0.2)
        return self.running_count() == 0

    # -- taking runs ------------------------------------------------------------------------

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        # While draining, or while no slot has its models loaded or room for a run, leave
        # runs to others, and do not even ask for them: a busy host's polls are paid for
        # nothing (one request per query interval per host, whatever the load).
        if self.draining or self.pool is None or not self.pool.has_room():
            return []
        return await super().get_and_submit_flow_runs()

    async def _get_scheduled_flow_runs(self) -> list[Any]:
        """The poll's candidates (Prefect's order: queue priority, then time), less the
        runs of lower lanes that only a first lane's reserved place could take
        (`internals.POLL_HOOK`)."""
        runs = await super()._get_scheduled_flow_runs()
        if self.pool is None or not self.lanes.enabled:
            return runs
        free, free_other = self.pool.room()
        return admit(runs, lambda r: self._first_lane(r.flow_run), free, free_other)

    def _first_lane(self, flow_run: FlowRun) -> bool:
        """Whether `flow_run` may take a place kept for the first lane."""
        return is_first_lane(self.lanes, flow_run.work_queue_name)

    def _can_take_run(self) -> bool:
        """Whether this host may claim one more run now: not draining, healthy, a slot with
        room and a concurrency slot free."""
        if self.draining or self.pool is None or not self.pool.has_room():
            return False
        try:
            return float(self.limiter.available_tokens) >= 1
        except RuntimeError:  # not set up yet
            return False

    async def _listen_for_runs(self) -> None:
        """Hear this pool's runs become ready to start on Prefect's events stream, and claim
        them at once (`deployments.worker.run_starts`)."""
        while self._work_pool is None:  # known once the worker has synced with the API
            await anyio.sleep(0.5)
        self.run_starts = RunStartStream(
            run_start_filter(self._work_pool.id),
            on_run=self._heard_run,
            on_connected=self._connected,
            logger=self._logger,
            on_deployment=self._deployment_changed,
        )
        await self.run_starts.run()

    def _stream_up(self) -> bool:
        return self.run_starts is not None and self.run_starts.connected

    async def _connected(self) -> None:
        """The stream is (back) up: what it may have missed is read afresh."""
        if self.deployment_reads is not None:
            self.deployment_reads.forget_all()
        await self._poll_now()

    def _deployment_changed(self, deployment_id: UUID) -> None:
        if self.deployment_reads is not None:
            self.deployment_reads.forget(deployment_id)

    def _heard_run(self, flow_run_id: UUID) -> None:
        """A run of this pool is ready to start. Only a host that can take it reacts (the
        others would only make the server refuse their claim); a host that cannot polls as
        soon as a slot frees, in case the run still waits then."""
        if not self._can_take_run():
            self._heard_while_full = True
            return
        internals.start_in_worker(self, self._claim_heard, flow_run_id)

    async def _claim_heard(self, flow_run_id: UUID) -> None:
        """Claim a run heard on the stream, as the poll would have: read it (still waiting?
        one of this worker's queues? due?), then Prefect's submission, whose Pending
        proposal makes one claim of a run that several hosts heard."""
        from prefect.settings import PREFECT_WORKER_QUERY_SECONDS
        from prefect.types._datetime import now

        if internals.is_submitting(self, flow_run_id):
            return
        try:
            flow_run = await self.client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return
        state = flow_run.state
        if state is None or not state.is_scheduled() or flow_run.work_queue_id is None:
            # Claimed by another host that heard it first, or cancelled.
            self._logger.info(
                "heard flow run %s: already %s", flow_run_id, state.name if state else "gone"
            )
            return
        if self._work_queues and flow_run.work_queue_name not in self._work_queues:
            return  # a queue this worker does not serve
        if self.pool is not None and not self.pool.has_room(self._first_lane(flow_run)):
            # Only the places kept for the first lane are free: this run waits for a place.
            self._heard_while_full = True
            return
        self._logger.info("heard flow run %s (%s): claiming it", flow_run_id, state.name)
        delay = claim_delay_s(
            state.state_details.scheduled_time,
            now("UTC"),
            self._prefetch_seconds,
            float(PREFECT_WORKER_QUERY_SECONDS.value()),
        )
        if delay is None:
            return  # due after the next timed poll, which takes it
        if delay > 0:
            await anyio.sleep(delay)
            if not self._can_take_run():
                self._heard_while_full = True
                return
        await internals.submit_scheduled(self, flow_run, flow_run.work_queue_id)

    async def _poll_now(self) -> None:
        """Look for waiting runs now rather than at the next timed poll."""
        try:
            await self.get_and_submit_flow_runs()
        except Exception as exc:  # the timed poll tries again
            self._logger.warning("could not look for waiting runs: %s", exc)

    def _slot_freed(self) -> None:
        """A run left this host: if a run was heard while it was full, look now."""
        if self._heard_while_full and self._can_take_run():
            self._heard_while_full = False
            internals.start_in_worker(self, self._poll_now)

    # Overrides `BaseWorker`'s per-run submission (`prefect_internals.SUBMIT_HOOK`).
    async def _submit_run_and_capture_errors(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[int | Exception] | None = None,
    ) -> BaseWorkerResult | Exception:
        """BaseWorker's, less what costs the server on every run and serves nothing on a
        warm pool: the job configuration is the pool's, built once (BaseWorker reads the
        run's flow and deployment to build it per run, for job variables a warm pool
        refuses); no Submitting state (Pending already claims the run: one state, one event
        and one request fewer); no submitted/executed worker events (the run's own state
        events say when it started and ended, its labels which worker ran it). The labels
        stay: the recovery service finds a dead worker's runs by them."""
        claimed_at = time.time()  # BaseWorker calls this once the run's Pending is accepted
        try:
            if self._configuration is None:
                self._configuration = await WarmJobConfiguration.from_template_and_values(
                    self.work_pool.base_job_template, {}, client=self.client
                )
            await internals.give_worker_labels(self, flow_run.id)
            result: BaseWorkerResult = await self.run(
                flow_run=flow_run,
                task_status=task_status,
                configuration=self._configuration,
                claimed_at=claimed_at,
            )
        except Exception as exc:
            run_logger = self.get_flow_run_logger(flow_run)
            if task_status is not None and not internals.has_started(task_status):
                run_logger.exception("Failed to submit flow run '%s' to a slot", flow_run.name)
                task_status.started(exc)
                await internals.propose_crashed(
                    self,
                    flow_run,
                    f"Failed to submit flow run to a slot: {type(exc).__name__}: {exc}",
                )
            else:
                run_logger.exception("Lost flow run '%s' on its slot", flow_run.name)
            return exc
        finally:
            internals.release_limit_slot(self, flow_run.id)
            self._slot_freed()
        return result

    async def run(
        self,
        flow_run: FlowRun,
        configuration: WarmJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
        claimed_at: float | None = None,
    ) -> WarmWorkerResult:
        """Run `flow_run` on a slot; `claimed_at`: when this worker's claim was accepted
        (epoch seconds), the end of the run's `claim` hop."""
        assert self.pool is not None
        run_id = str(flow_run.id)
        refusal = await self._refusal(flow_run)
        if refusal is not None:
            return await self._refuse(flow_run, task_status, refusal)
        request = RunRequest(run_id=run_id, flow_run=flow_run, claimed_at=claimed_at)
        first = self._first_lane(flow_run)
        waited = 0.0
        while (acquired := self.pool.try_acquire(request, first)) is None:
            if self.pool.unhealthy is not None:
                return await self._give_back(flow_run, task_status)
            if not first and waited >= PLACE_WAIT_S:
                # Claimed at the same moment as another run of its lane (each saw a place
                # free): holding it here would hold a concurrency slot the first lane may
                # need. Back to its queue, for the next place here or on another host.
                return await self._give_back(
                    flow_run,
                    task_status,
                    f"no place for lane {flow_run.work_queue_name} on {self.name} (the "
                    f"last are kept for {self.lanes.first})",
                )
            await anyio.sleep(ACQUIRE_POLL_S)
            waited += ACQUIRE_POLL_S
        slot, future = acquired
        identifier = str(SlotIdentifier(socket.gethostname(), slot.pid or 0, slot.index, run_id))
        self._observe(run_id, running=True)
        if task_status is not None:
            task_status.started(slot.pid or 0)  # Prefect's infrastructure_pid: the slot process
        try:
            outcome = await anyio.to_thread.run_sync(future.result, limiter=self._waits)
        finally:
            self._observe(run_id, running=False)
        if outcome.state == StateType.CANCELLING.value and run_id not in self._cancelled:
            # Cancelled while its last device call ran: every image got its outcome, and
            # the server refused the run's own final state. Left Cancelling it would count
            # as running for ever (the autoscaler would keep its host).
            with contextlib.suppress(ObjectNotFound):
                await self.client.set_flow_run_state(
                    flow_run.id,
                    Cancelled(message="cancelled as it finished: every image has its outcome"),
                    force=True,
                )
            return WarmWorkerResult(identifier=identifier, status_code=0)
        if outcome.state != CRASHED or run_id in self._cancelled:
            self._cancelled.discard(run_id)
            return WarmWorkerResult(identifier=identifier, status_code=0)
        message = f"{outcome.error}; the slot is being replaced"
        if outcome.victim_of:
            # Not this run's fault: run it again at once, counting no crash against it.
            message = f"{message}; {outcome.victim_of}, this run is re-run"
            self.get_flow_run_logger(flow_run).warning("%s", message)
            with contextlib.suppress(ObjectNotFound):
                await self.client.set_flow_run_state(
                    flow_run.id, AwaitingRetry(message=message), force=True
                )
            return WarmWorkerResult(identifier=identifier, status_code=0)
        self.get_flow_run_logger(flow_run).error("flow run crashed: %s", message)
        with contextlib.suppress(Abort, ObjectNotFound):
            await propose_state(self.client, Crashed(message=message), flow_run_id=flow_run.id)
        # Status 0 although it crashed: the state is set above, once. A non-zero status would
        # make BaseWorker propose Crashed a second time, after the recovery service may have
        # already re-scheduled the run (and a second crash would be counted).
        return WarmWorkerResult(identifier=identifier, status_code=0)

    async def _refusal(self, flow_run: FlowRun) -> str | None:
        """Why this worker does not run `flow_run` (`run_guard`), or None. The deployment
        read is the cached one BaseWorker already made; the flow's name is read once."""
        if flow_run.deployment_id is None:
            return "the run has no deployment: a warm worker runs deployments only"
        deployment = await self.client.read_deployment(flow_run.deployment_id)
        name = self._flow_names.get(deployment.flow_id)
        if name is None:
            name = (await self.client.read_flow(deployment.flow_id)).name
            self._flow_names[deployment.flow_id] = name
        return self.run_guard.refusal(name, deployment.entrypoint, deployment.pull_steps)

    async def _refuse(
        self, flow_run: FlowRun, task_status: anyio.abc.TaskStatus[int] | None, reason: str
    ) -> WarmWorkerResult:
        """End a refused run Failed, with the reason, before any slot sees it."""
        message = f"refused by worker {self.name}: {reason}"
        self.get_flow_run_logger(flow_run).error("%s", message)
        with contextlib.suppress(ObjectNotFound):
            await self.client.set_flow_run_state(flow_run.id, Failed(message=message), force=True)
        if task_status is not None:
            task_status.started(0)
        return WarmWorkerResult(identifier=f"refused:{flow_run.id}", status_code=0)

    async def _give_back(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[int] | None,
        why: str | None = None,
    ) -> WarmWorkerResult:
        """A run this worker claimed but never started (it is unhealthy, or `why`): back to
        the queue for another host, with no crash counted."""
        if task_status is not None:
            task_status.started(0)
        reason = why or f"worker {self.name} is unhealthy ({self.unhealthy})"
        message = f"given back: {reason}"
        self.get_flow_run_logger(flow_run).warning("%s", message)
        with contextlib.suppress(ObjectNotFound):
            await self.client.set_flow_run_state(
                flow_run.id, AwaitingRetry(message=message), force=True
            )
        return WarmWorkerResult(identifier=f"given-back:{flow_run.id}", status_code=0)

    # -- cancellation -----------------------------------------------------------------------

    async def _watch_cancellations(self) -> None:
        """Prefect's worker cancels only runs that have not started (a started run is the
        job of its own process's runner). Runs on warm slots share a process, so the worker
        watches the runs on its slots for a Cancelling state and tells their slot. It
        listens on Prefect's events stream (a subscription to this pool's Cancelling
        events: no request while nothing is cancelled, whatever the hosts and the load);
        while the stream is down, Prefect's observer asks for them every `cancel_poll_s`."""
        from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

        while self._work_pool is None:  # known once the worker has synced with the API
            await anyio.sleep(0.5)
        pool_id = self._work_pool.id
        observer = internals.cancelling_observer(
            self._on_cancelling,
            self.worker_settings.cancel_poll_s,
            EventFilter(
                event=EventNameFilter(name=["prefect.flow-run.Cancelling"]),
                any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{pool_id}"]),
            ),
        )
        async with observer:
            self._observer = observer
            for run_id in self.pool.running_ids() if self.pool is not None else []:
                observer.add_in_flight_flow_run_id(UUID(run_id))
            await anyio.sleep_forever()

    def _observe(self, run_id: str, running: bool) -> None:
        """Watch a run on a slot for cancellation from now on (or no longer)."""
        if self._observer is None:
            return
        if running:
            self._observer.add_in_flight_flow_run_id(UUID(run_id))
        else:
            self._observer.remove_in_flight_flow_run_id(UUID(run_id))
            self._cancelling.discard(run_id)

    def _on_cancelling(self, flow_run_id: UUID) -> None:
        run_id = str(flow_run_id)
        if run_id in self._cancelling:
            return  # the stream and a poll may both say so
        self._cancelling.add(run_id)
        internals.start_in_worker(self, self._cancel_started_run, flow_run_id)

    async def _cancel_started_run(self, flow_run_id: UUID) -> None:
        """Tell the run's slot to stop it (between diffusion steps); past the grace period,
        kill the slot. BaseWorker's own cancellation handles runs not yet started."""
        run_id = str(flow_run_id)
        slot = self.pool.slot_of(run_id) if self.pool is not None else None
        if slot is None:
            return
        self._logger.info("cancelling flow run %s on %s", run_id, slot.describe())
        future = slot.inflight.get(run_id)
        slot.send(CancelRequest(run_id=run_id))
        if future is None:
            return
        stopped = False
        with anyio.move_on_after(self.worker_settings.cancel_grace_s):
            await anyio.to_thread.run_sync(
                future.result, abandon_on_cancel=True, limiter=self._waits
            )
            stopped = True
        if not stopped:
            self._logger.warning(
                "flow run %s did not stop within %.0f s; killing %s",
                run_id,
                self.worker_settings.cancel_grace_s,
                slot.describe(),
            )
            self._cancelled.add(run_id)
            self.pool.kill(slot)  # type: ignore[union-attr]
            await self.client.set_flow_run_state(
                flow_run_id,
                Cancelled(message="cancelled; its slot was killed and is being replaced"),
                force=True,
            )

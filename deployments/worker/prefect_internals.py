"""Every use the warm worker makes of Prefect's (and anyio's) private internals, in one place,
each with what it assumes. `tests/unit/test_prefect_internals.py` pins these assumptions
against the installed versions, so an upgrade that breaks one fails there, by name, before
any warm worker runs. The tested range is `prefect>=3.9.1,<3.10` (`pyproject.toml`).

Why private at all: Prefect's `BaseWorker` runs each flow run in a new process. A warm worker
hands runs to long-lived slot processes instead, and three things have no public hook:

- submitting a run (`SUBMIT_HOOK`): the warm worker overrides `BaseWorker`'s per-run
  submission to skip what costs the server on every run and serves nothing on a warm pool,
  and calls the three helpers it is made of (worker labels, a Crashed state on a failed
  submission, the worker's concurrency slot);
- the worker's task group (`start_in_worker`): the cancellation watcher and the drain run as
  long as the worker, beside its own runs;
- the cancellation observer (`cancelling_observer`): Prefect's worker cancels only runs that
  have not started; runs on warm slots share a process, so the worker watches them itself
  with the observer Prefect's runner uses (event stream, polling while it is down);
- the poll's candidates (`POLL_HOOK`): with lanes, a host keeps run places for the first
  lane; Prefect's worker would claim any waiting run it has a concurrency slot for;
- claiming a run heard on the events stream (`submit_scheduled`, `is_submitting`): Prefect's
  worker finds runs only by its timed poll; the warm worker hands a run it heard to the same
  submission its poll uses (concurrency limit, Pending proposal, hand-off), so both paths
  claim the same way and a run heard and polled at once is submitted once;
- the engine's suspension observer (`skip_suspension_observer`): Prefect's flow engine
  starts, for every deployment run, a thread with its own event loop and events
  subscription that waits for a Suspended state, and waits for it to connect before the
  flow starts; nothing on a warm pool suspends a run, so slots do without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

if TYPE_CHECKING:
    import anyio.abc
    from prefect.client.schemas.objects import FlowRun
    from prefect.events.filters import EventFilter
    from prefect.workers.base import BaseWorker

# The coroutine method of `BaseWorker` that submits one flow run:
# `(self, flow_run, task_status=None) -> BaseWorkerResult | Exception`. The warm worker
# overrides it; `BaseWorker.get_and_submit_flow_runs` starts it once per run it claims.
SUBMIT_HOOK = "_submit_run_and_capture_errors"
# The coroutine method of `BaseWorker` its poll takes candidates from:
# `(self) -> list[WorkerFlowRunResponse]` (each with `.flow_run`), in the server's order
# (queue priority, then time), awaited by `get_and_submit_flow_runs`. The warm worker
# overrides it to leave out runs of lower lanes that only a reserved place could take.
POLL_HOOK = "_get_scheduled_flow_runs"


def start_in_worker(
    worker: BaseWorker[Any, Any, Any], func: Callable[..., Coroutine[Any, Any, Any]], *args: Any
) -> None:
    """Start `func(*args)` in the worker's own task group. Assumes `BaseWorker.setup` sets
    `_runs_task_group` to an anyio task group entered into the worker's exit stack, so that
    it lives until the worker exits (its runs and its cancellation handling use it); the
    warm worker's `setup` calls `BaseWorker.setup` first."""
    group = worker._runs_task_group
    if group is None:
        raise RuntimeError("the worker's task group is not open: call it after `BaseWorker.setup`")
    group.start_soon(func, *args)


async def give_worker_labels(worker: BaseWorker[Any, Any, Any], flow_run_id: UUID) -> None:
    """Label the run with this worker (`prefect.worker.name`, ...), as `BaseWorker` does on
    submission: the recovery service finds a dead worker's runs by these labels."""
    await worker._give_worker_labels_to_flow_run(flow_run_id)


async def propose_crashed(
    worker: BaseWorker[Any, Any, Any], flow_run: FlowRun, message: str
) -> None:
    """Propose a Crashed state for a run the worker claimed but could not start."""
    await worker._propose_crashed_state(flow_run, message)


def release_limit_slot(worker: BaseWorker[Any, Any, Any], flow_run_id: UUID) -> None:
    """Give back the worker's concurrency slot that `BaseWorker` took for the run."""
    worker._release_limit_slot(flow_run_id)


def has_started(task_status: anyio.abc.TaskStatus[Any]) -> bool:
    """Whether `task_status.started()` was called. anyio's `TaskStatus` says so only through
    its private `_future` (set by `started()`)."""
    future = getattr(task_status, "_future")  # noqa: B009
    done: bool = future.done()
    return done


async def submit_scheduled(
    worker: BaseWorker[Any, Any, Any], flow_run: FlowRun, work_queue_id: UUID
) -> bool:
    """Submit `flow_run` (read in a SCHEDULED state) as `BaseWorker` submits what its poll
    finds: `_submit_scheduled_flow_runs(list[WorkerFlowRunResponse])` takes the worker's
    concurrency slot for the run (none free: nothing happens), skips a run already being
    submitted, and starts `_submit_run`, which proposes Pending (the claim: a run another
    host claimed first is aborted by the server) and then calls the submit hook. Whether it
    was taken for submission."""
    from prefect.client.schemas.responses import WorkerFlowRunResponse

    response = WorkerFlowRunResponse(
        work_pool_id=worker.work_pool.id, work_queue_id=work_queue_id, flow_run=flow_run
    )
    submitted = await worker._submit_scheduled_flow_runs(flow_run_response=[response])
    return any(run.id == flow_run.id for run in submitted)


def is_submitting(worker: BaseWorker[Any, Any, Any], flow_run_id: UUID) -> bool:
    """Whether the worker is submitting `flow_run_id` now (`BaseWorker` keeps these ids in
    `_submitting_flow_run_ids` from its claim until the hand-off returns)."""
    return flow_run_id in worker._submitting_flow_run_ids


def cancelling_observer(
    on_cancelling: Callable[[UUID], None], polling_interval: float, event_filter: EventFilter
) -> Any:
    """Prefect's `FlowRunCancellingObserver` (`prefect._internal.observers`): an async
    context manager that calls `on_cancelling(flow_run_id)` synchronously, once per run put
    in Cancelling, for the runs registered with `add_in_flight_flow_run_id` (and no longer
    after `remove_in_flight_flow_run_id`); it listens to the events stream matching
    `event_filter` and polls every `polling_interval` seconds while the stream is down."""
    from prefect._internal.observers import FlowRunCancellingObserver

    return FlowRunCancellingObserver(
        on_cancelling=cast(Any, on_cancelling),
        polling_interval=polling_interval,
        event_filter=event_filter,
    )


def skip_suspension_observer() -> None:
    """Make this process's flow runs start without Prefect's suspension observer. Assumes
    `prefect.flow_engine` binds `observe_flow_run_suspension(flow_run_id,
    suspension_request, polling_interval=10)` (a context manager from
    `prefect._flow_run_suspension`) at module level and enters it, by that name, only from
    `BaseFlowRunEngine.setup_flow_run_suspension_request`, for runs of a deployment. The
    suspension request itself is still registered: a flow that asked to suspend itself
    would still be told to stop (nothing here does)."""
    from contextlib import nullcontext

    import prefect.flow_engine

    def no_observer(*_args: Any, **_kwargs: Any) -> nullcontext[None]:
        return nullcontext()

    prefect.flow_engine.observe_flow_run_suspension = no_observer  # type: ignore[assignment]


class DeploymentReads:
    """Answers `client.read_deployment(deployment_id)` (a coroutine method of Prefect's async
    client, which `BaseWorker` calls for every run it submits) from a cache, on one client
    object. A warm pool's deployments change rarely and its runs carry no job variables
    (the template refuses them), so a deployment is read again only when it changes: the
    worker calls `forget` when the events stream says it was updated or deleted, and
    `forget_all` when the stream comes back (it may have missed such an event). While the
    stream is down (`trusted()` False) an entry lasts `ttl_s`."""

    def __init__(self, client: Any, ttl_s: float, trusted: Callable[[], bool]) -> None:
        self._original = client.read_deployment
        self._ttl_s = ttl_s
        self._trusted = trusted
        self._cache: dict[Any, tuple[float, Any]] = {}
        self.reads = 0
        client.read_deployment = self.read_deployment

    async def read_deployment(self, deployment_id: Any, *args: Any, **kwargs: Any) -> Any:
        hit = self._cache.get(deployment_id)
        if hit is not None and (self._trusted() or time.monotonic() - hit[0] < self._ttl_s):
            return hit[1]
        found = await self._original(deployment_id, *args, **kwargs)
        self.reads += 1
        self._cache[deployment_id] = (time.monotonic(), found)
        return found

    def forget(self, deployment_id: Any) -> None:
        self._cache.pop(deployment_id, None)

    def forget_all(self) -> None:
        self._cache.clear()

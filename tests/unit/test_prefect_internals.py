"""The assumptions `deployments.worker.prefect_internals` makes of Prefect's and anyio's
private internals, pinned against the installed versions: an upgrade that breaks one fails
here, by name, before any warm worker runs."""

from __future__ import annotations

import inspect
from typing import Any
from uuid import UUID, uuid4

import anyio
import anyio.abc
import pytest
from prefect.workers.base import BaseWorker

from deployments.worker import prefect_internals as internals
from deployments.worker.warm_worker import WarmWorker


def params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def test_the_submit_hook_is_a_coroutine_method_of_base_worker_with_the_expected_signature() -> None:
    hook = getattr(BaseWorker, internals.SUBMIT_HOOK)
    assert inspect.iscoroutinefunction(hook)
    assert params(hook) == ["self", "flow_run", "task_status"]
    assert inspect.signature(hook).parameters["task_status"].default is None
    # BaseWorker starts it once per claimed run; the warm worker's override is what runs.
    assert internals.SUBMIT_HOOK in inspect.getsource(BaseWorker._submit_run)
    assert WarmWorker.__dict__[internals.SUBMIT_HOOK] is not hook
    assert params(WarmWorker.__dict__[internals.SUBMIT_HOOK]) == params(hook)


def test_the_poll_hook_is_where_base_worker_s_poll_takes_its_candidates() -> None:
    hook = getattr(BaseWorker, internals.POLL_HOOK)
    assert inspect.iscoroutinefunction(hook)
    assert params(hook) == ["self"]
    assert f"self.{internals.POLL_HOOK}()" in inspect.getsource(BaseWorker.get_and_submit_flow_runs)
    assert "flow_run_response=" in inspect.getsource(BaseWorker.get_and_submit_flow_runs)
    override = WarmWorker.__dict__[internals.POLL_HOOK]
    assert override is not hook and params(override) == params(hook)


def test_the_helpers_the_submission_is_made_of_exist_with_the_expected_signatures() -> None:
    assert inspect.iscoroutinefunction(BaseWorker._give_worker_labels_to_flow_run)
    assert params(BaseWorker._give_worker_labels_to_flow_run) == ["self", "flow_run_id"]
    assert inspect.iscoroutinefunction(BaseWorker._propose_crashed_state)
    assert params(BaseWorker._propose_crashed_state)[:3] == ["self", "flow_run", "message"]
    assert not inspect.iscoroutinefunction(BaseWorker._release_limit_slot)
    assert params(BaseWorker._release_limit_slot) == ["self", "flow_run_id"]


def test_the_worker_opens_its_runs_task_group_in_setup_for_its_whole_life() -> None:
    assert "self._runs_task_group: Optional[anyio.abc.TaskGroup] = None" in inspect.getsource(
        BaseWorker.__init__
    )
    setup = inspect.getsource(BaseWorker.setup)
    assert "self._runs_task_group = anyio.create_task_group()" in setup
    assert "enter_async_context(self._runs_task_group)" in setup
    # The warm worker's own setup starts its watchers only after BaseWorker's.
    warm_setup = inspect.getsource(WarmWorker.setup)
    assert warm_setup.index("await super().setup()") < warm_setup.index("start_in_worker")


class _Worker:
    """Stands in for a worker: only the attribute `start_in_worker` reads."""

    def __init__(self, group: anyio.abc.TaskGroup | None) -> None:
        self._runs_task_group = group


def test_start_in_worker_runs_in_the_group_and_refuses_a_closed_one() -> None:
    ran: list[int] = []

    async def job(value: int) -> None:
        ran.append(value)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            internals.start_in_worker(_Worker(group), job, 7)  # type: ignore[arg-type]

    anyio.run(main)
    assert ran == [7]
    with pytest.raises(RuntimeError, match="task group is not open"):
        internals.start_in_worker(_Worker(None), job, 1)  # type: ignore[arg-type]


def test_has_started_reads_anyio_task_status_before_and_after_started() -> None:
    seen: list[bool] = []

    async def child(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        seen.append(internals.has_started(task_status))
        task_status.started(1)
        seen.append(internals.has_started(task_status))

    async def main() -> int:
        async with anyio.create_task_group() as group:
            value: int = await group.start(child)
        return value

    assert anyio.run(main) == 1
    assert seen == [False, True]


def test_the_cancelling_observer_takes_the_arguments_and_methods_the_worker_uses() -> None:
    from prefect._internal.observers import FlowRunCancellingObserver
    from prefect.events.filters import EventFilter, EventNameFilter

    init = inspect.signature(FlowRunCancellingObserver.__init__).parameters
    assert {"on_cancelling", "polling_interval", "event_filter"} <= set(init)
    calls: list[UUID] = []
    observer = internals.cancelling_observer(
        calls.append, 2.0, EventFilter(event=EventNameFilter(name=["prefect.flow-run.Cancelling"]))
    )
    assert isinstance(observer, FlowRunCancellingObserver)
    assert hasattr(observer, "__aenter__") and hasattr(observer, "__aexit__")
    run = uuid4()
    observer.add_in_flight_flow_run_id(run)
    assert run in observer._in_flight_flow_run_ids
    observer.remove_in_flight_flow_run_id(run)
    assert run not in observer._in_flight_flow_run_ids


def test_the_prefect_client_reads_a_deployment_by_id_as_a_coroutine() -> None:
    from prefect.client.orchestration import PrefectClient

    assert inspect.iscoroutinefunction(PrefectClient.read_deployment)
    assert params(PrefectClient.read_deployment)[:2] == ["self", "deployment_id"]


def test_a_heard_run_is_submitted_the_way_the_poll_submits_it() -> None:
    submit = BaseWorker._submit_scheduled_flow_runs
    assert inspect.iscoroutinefunction(submit)
    assert params(submit) == ["self", "flow_run_response"]
    source = inspect.getsource(submit)
    # It takes the worker's concurrency slot, skips a run already being submitted, and
    # starts `_submit_run`, whose Pending proposal is the claim.
    assert "acquire_on_behalf_of_nowait(flow_run.id)" in source
    assert "self._submitting_flow_run_ids" in source
    assert "self._submit_run," in source
    assert "_propose_pending_state(flow_run)" in inspect.getsource(BaseWorker._submit_run)
    # What the warm worker reads to decide whether to claim a heard run.
    init = inspect.getsource(BaseWorker.__init__)
    assert "self._submitting_flow_run_ids: set[UUID] = set()" in init
    assert "self._prefetch_seconds" in init and "self._work_queues" in init


def test_is_submitting_reads_the_worker_s_submitting_ids() -> None:
    class Worker:
        def __init__(self) -> None:
            self._submitting_flow_run_ids = {UUID(int=1)}

    assert internals.is_submitting(Worker(), UUID(int=1))  # type: ignore[arg-type]
    assert not internals.is_submitting(Worker(), UUID(int=2))  # type: ignore[arg-type]


def test_the_engine_enters_the_suspension_observer_by_its_module_name_for_deployment_runs() -> None:
    import prefect.flow_engine
    from prefect._flow_run_suspension import observe_flow_run_suspension

    assert prefect.flow_engine.observe_flow_run_suspension is observe_flow_run_suspension
    assert params(observe_flow_run_suspension) == [
        "flow_run_id",
        "suspension_request",
        "polling_interval",
    ]
    source = inspect.getsource(prefect.flow_engine.BaseFlowRunEngine)
    assert source.count("observe_flow_run_suspension(") == 1
    setup = inspect.getsource(
        prefect.flow_engine.BaseFlowRunEngine.setup_flow_run_suspension_request
    )
    assert "if self.flow_run.deployment_id:" in setup
    assert "observe_flow_run_suspension(" in setup


def test_skipping_the_suspension_observer_starts_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import prefect.flow_engine

    monkeypatch.setattr(
        prefect.flow_engine,
        "observe_flow_run_suspension",
        prefect.flow_engine.observe_flow_run_suspension,
    )  # restored after the test
    internals.skip_suspension_observer()
    before = threading.active_count()
    with prefect.flow_engine.observe_flow_run_suspension(uuid4(), object()):  # type: ignore[arg-type]
        assert threading.active_count() == before

"""Reading a work pool's flow runs by state, a page at a time (the API serves at most 200 a
page): the one query the autoscaler, the recovery service and the reconciler share; and the
hosts with a worker online, which the autoscaler and the fleet view both count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deployments.worker.names import host_of

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import WorkPoolFilter
    from prefect.client.schemas.objects import FlowRun

PAGE = 200


def pool_filter(pool: str) -> WorkPoolFilter:
    """The filter for one work pool, by name."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    return WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))


def pool_runs(
    prefect: SyncPrefectClient,
    pool: str,
    types: list[str],
    names: list[str] | None = None,
) -> list[FlowRun]:
    """Every run of `pool` whose state type is in `types` (and name in `names`, if given)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    state = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType(t) for t in types]),
        name=FlowRunFilterStateName(any_=names) if names else None,
    )
    runs: list[FlowRun] = []
    while True:  # bounded by the number of such runs
        page = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=state),
            work_pool_filter=pool_filter(pool),
            limit=PAGE,
            offset=len(runs),
        )
        runs += page
        if len(page) < PAGE:
            return runs


class PoolResource:
    """A work pool as an event resource. Prefect names it by the pool's id, not its name
    (`prefect.work-pool.<id>`), so events attach to the pool's own feed; the id is read
    once."""

    def __init__(self, prefect: SyncPrefectClient, pool: str) -> None:
        self.prefect = prefect
        self.pool = pool
        self._id: str | None = None

    @property
    def resource_id(self) -> str:
        if self._id is None:
            self._id = f"prefect.work-pool.{self.prefect.read_work_pool(self.pool).id}"
        return self._id

    def resource(self) -> dict[str, str]:
        return {"prefect.resource.id": self.resource_id, "prefect.resource.name": self.pool}


def online_workers(prefect: SyncPrefectClient, pool: str) -> set[str]:
    """Names of the warm workers online (heartbeating) on `pool`: one per worker process."""
    from prefect.client.schemas.objects import WorkerStatus

    workers = prefect.read_workers_for_work_pool(pool, limit=PAGE)
    return {w.name for w in workers if w.status == WorkerStatus.ONLINE}


def online_hosts(prefect: SyncPrefectClient, pool: str) -> set[str]:
    """Hosts with a warm worker online (heartbeating) on `pool`. A worker heartbeats while
    its slots still load, so these are at most the hosts that serve."""
    return {host_of(name) for name in online_workers(prefect, pool)}

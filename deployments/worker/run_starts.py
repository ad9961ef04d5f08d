"""A run starts when it is created, not at the worker's next poll: the warm worker hears its
pool's runs become Scheduled (new, retried, late) on Prefect's events stream and claims them
at once through Prefect's Pending proposal, which lets exactly one host win a run that
several heard. Prefect's own worker finds runs only by its timed poll (every
`PREFECT_WORKER_QUERY_SECONDS`, 10 s by default): a lone upload waited half of that on
average, twice in the split topology.

The stream is an addition, not a replacement: the worker's timed poll goes on, and is what
starts runs while the stream is down. On every (re)connection the worker polls once, so
nothing created while it was away waits for the next timed poll; events that occurred before
the connection (Prefect's subscriber replays the last minute) are covered by that poll and
ignored.

The same subscription tells the worker when one of its pool's deployments changes, so it
reads a deployment again then, not on a timer.

`heard_run`, `changed_deployment` and `claim_delay_s` are the pure rules; `RunStartStream`
is the worker's subscription (`deployments.run_events` keeps it open).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from deployments.run_events import RunEventStream, StreamWords

if TYPE_CHECKING:
    from prefect.events import Event
    from prefect.events.filters import EventFilter

# The state names of Prefect's SCHEDULED type a run reaches when it may start: created (or
# re-scheduled by the recovery service), a retry, and a run the server marked late.
RUN_START_EVENTS = (
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.AwaitingRetry",
    "prefect.flow-run.Late",
)
DEPLOYMENT_EVENTS = ("prefect.deployment.updated", "prefect.deployment.deleted")
FLOW_RUN_PREFIX = "prefect.flow-run."
DEPLOYMENT_PREFIX = "prefect.deployment."


def run_start_filter(pool_id: UUID) -> EventFilter:
    """The events of runs in pool `pool_id` becoming ready to start, and of its deployments
    changing."""
    from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

    return EventFilter(
        event=EventNameFilter(name=[*RUN_START_EVENTS, *DEPLOYMENT_EVENTS]),
        any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{pool_id}"]),
    )


def heard_run(
    event_name: str, resource_id: str, occurred: datetime.datetime, since: datetime.datetime
) -> UUID | None:
    """The flow run an event says is ready to start, or None: another kind of event, a
    resource that is not a flow run, or one that occurred before `since` (a replay of what
    the catch-up poll covers)."""
    if event_name not in RUN_START_EVENTS or occurred < since:
        return None
    if not resource_id.startswith(FLOW_RUN_PREFIX):
        return None
    try:
        return UUID(resource_id.removeprefix(FLOW_RUN_PREFIX))
    except ValueError:
        return None


def changed_deployment(event_name: str, resource_id: str) -> UUID | None:
    """The deployment an event says was updated or deleted, or None."""
    if event_name not in DEPLOYMENT_EVENTS or not resource_id.startswith(DEPLOYMENT_PREFIX):
        return None
    try:
        return UUID(resource_id.removeprefix(DEPLOYMENT_PREFIX))
    except ValueError:
        return None


def claim_delay_s(
    scheduled_time: datetime.datetime | None,
    now: datetime.datetime,
    prefetch_s: float,
    poll_s: float,
) -> float | None:
    """How long to wait before claiming a run scheduled at `scheduled_time` (a retry may be
    scheduled a little later): 0 for a run due now (or within the worker's prefetch), the
    wait for one due before the next timed poll, None for one due later (the poll takes
    it; holding a timer for every far-off retry would serve nothing)."""
    if scheduled_time is None:
        return 0.0
    wait = (scheduled_time - now).total_seconds() - prefetch_s
    if wait <= 0:
        return 0.0
    return wait if wait < poll_s else None


class RunStartStream(RunEventStream):
    """The worker's subscription (`run_start_filter`): `on_run(run_id)` for each run heard
    live, `on_deployment(deployment_id)` for each deployment changed, `on_connected()` after
    each (re)connection (the worker polls then, and forgets what it read of its
    deployments)."""

    def __init__(
        self,
        event_filter: EventFilter,
        on_run: Callable[[UUID], None],
        on_connected: Callable[[], Awaitable[Any]],
        logger: logging.Logger | logging.LoggerAdapter[Any],
        subscriber: Callable[[EventFilter], Any] | None = None,
        on_deployment: Callable[[UUID], None] | None = None,
    ) -> None:
        super().__init__(
            event_filter,
            self._handle,
            on_connected,
            logger,
            StreamWords(
                "run-start", "this pool's run starts", "the timed poll starts runs meanwhile"
            ),
            subscriber,
        )
        self._on_run = on_run
        self._on_deployment = on_deployment

    def _handle(self, event: Event, since: datetime.datetime) -> None:
        run_id = heard_run(event.event, event.resource.id, event.occurred, since)
        if run_id is not None:
            self._on_run(run_id)
            return
        deployment_id = changed_deployment(event.event, event.resource.id)
        if deployment_id is not None and self._on_deployment is not None:
            self._on_deployment(deployment_id)

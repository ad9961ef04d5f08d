"""The dispatcher hears its runs claimed: while runs wait for a slot, what the dispatcher
holds leaves as soon as the pool can take a run (`batching.plan_batch`), and the moment
that changes is a waiting run being claimed by a worker (Pending) or starting on a slot
(Running). Prefect's events stream says so with no request; without it the dispatcher
counts the waiting runs again once a second, so a held image waited up to that second
more, plus the rest of its loop's long poll.

`heard_claim` is the pure rule; `RunClaims` keeps the subscription in a thread of its own
(the dispatcher's loop is synchronous), and `heard` is set for each claim heard.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio

from deployments.run_events import RunEventStream, StreamWords

if TYPE_CHECKING:
    from prefect.events import Event
    from prefect.events.filters import EventFilter

CLAIM_EVENTS = ("prefect.flow-run.Pending", "prefect.flow-run.Running")
FLOW_RUN_PREFIX = "prefect.flow-run."
WORDS = StreamWords(
    "run-claim",
    "this deployment's run claims",
    "the count of waiting runs is read once a second meanwhile",
)


def claims_filter(deployment_id: UUID) -> EventFilter:
    """The events of runs of deployment `deployment_id` being claimed or starting."""
    from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

    return EventFilter(
        event=EventNameFilter(name=list(CLAIM_EVENTS)),
        any_resource=EventAnyResourceFilter(id=[f"prefect.deployment.{deployment_id}"]),
    )


def heard_claim(
    event_name: str, resource_id: str, occurred: datetime.datetime, since: datetime.datetime
) -> bool:
    """Whether an event says a run was claimed or started since the connection opened."""
    return (
        event_name in CLAIM_EVENTS and resource_id.startswith(FLOW_RUN_PREFIX) and occurred >= since
    )


class RunClaims:
    """The subscription, in a daemon thread with an event loop of its own, until `stop()`."""

    def __init__(
        self,
        deployment_id: UUID,
        logger: logging.Logger,
        subscriber: Callable[[EventFilter], Any] | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        """`wake`: set with `heard` (the dispatcher's round waits on it for an arrival
        or a claim, whichever comes first)."""
        self.heard = threading.Event()
        self._wake = wake
        self._stop = threading.Event()
        self._stream = RunEventStream(
            claims_filter(deployment_id),
            self._on_event,
            self._caught_up,
            logger,
            WORDS,
            subscriber,
        )
        self._thread = threading.Thread(target=self._main, name="run-claims", daemon=True)

    @property
    def connected(self) -> bool:
        return self._stream.connected

    def start(self) -> RunClaims:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.heard.set()  # wakes whoever waits on a claim
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _on_event(self, event: Event, since: datetime.datetime) -> None:
        if heard_claim(event.event, event.resource.id, event.occurred, since):
            self._heard()

    async def _caught_up(self) -> None:
        """(Re)connected: the count read next is read afresh."""
        self._heard()

    def _heard(self) -> None:
        self.heard.set()
        if self._wake is not None:
            self._wake.set()

    def _main(self) -> None:
        async def until_stopped() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(self._stream.run)
                while not self._stop.is_set():
                    await anyio.sleep(0.2)
                group.cancel_scope.cancel()

        anyio.run(until_stopped)

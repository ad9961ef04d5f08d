"""The rules of hearing a run start on the events stream, and the stream's reconnection."""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import anyio
import pytest
from prefect.events import Event

from deployments import run_events
from deployments.worker import run_starts
from deployments.worker.run_starts import (
    RunStartStream,
    changed_deployment,
    claim_delay_s,
    heard_run,
)

T0 = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
RUN = uuid4()


@pytest.mark.parametrize("name", run_starts.RUN_START_EVENTS)
def test_a_run_becoming_ready_to_start_is_heard(name: str) -> None:
    assert heard_run(name, f"prefect.flow-run.{RUN}", T0, T0) == RUN


def test_other_events_replays_and_other_resources_are_not() -> None:
    assert heard_run("prefect.flow-run.Running", f"prefect.flow-run.{RUN}", T0, T0) is None
    assert heard_run("prefect.flow-run.Pending", f"prefect.flow-run.{RUN}", T0, T0) is None
    before = T0 - datetime.timedelta(milliseconds=1)
    assert heard_run("prefect.flow-run.Scheduled", f"prefect.flow-run.{RUN}", before, T0) is None
    assert heard_run("prefect.flow-run.Scheduled", f"prefect.task-run.{RUN}", T0, T0) is None
    assert heard_run("prefect.flow-run.Scheduled", "prefect.flow-run.not-a-uuid", T0, T0) is None


def test_a_deployment_updated_or_deleted_is_heard_as_changed() -> None:
    for name in ("prefect.deployment.updated", "prefect.deployment.deleted"):
        assert changed_deployment(name, f"prefect.deployment.{RUN}") == RUN
    assert changed_deployment("prefect.deployment.created", f"prefect.deployment.{RUN}") is None
    assert changed_deployment("prefect.deployment.updated", f"prefect.flow-run.{RUN}") is None
    assert heard_run("prefect.deployment.updated", f"prefect.deployment.{RUN}", T0, T0) is None


def test_a_run_due_now_is_claimed_at_once_a_later_one_when_due_or_by_the_poll() -> None:
    later = T0 + datetime.timedelta(seconds=4)
    assert claim_delay_s(None, T0, prefetch_s=0, poll_s=10) == 0.0
    assert claim_delay_s(T0 - datetime.timedelta(seconds=1), T0, 0, 10) == 0.0
    assert claim_delay_s(later, T0, prefetch_s=0, poll_s=10) == 4.0
    assert claim_delay_s(later, T0, prefetch_s=5, poll_s=10) == 0.0  # within the prefetch
    assert claim_delay_s(later, T0, prefetch_s=1, poll_s=10) == 3.0
    assert claim_delay_s(later, T0, prefetch_s=0, poll_s=3) is None  # the poll comes first


def event(name: str, run_id: UUID, occurred: datetime.datetime, kind: str = "flow-run") -> Event:
    return Event(
        occurred=occurred,
        event=name,
        resource={"prefect.resource.id": f"prefect.{kind}.{run_id}"},
        id=uuid4(),
    )


class Script:
    """A subscriber that plays one scripted connection per call: a list of events then a
    drop, or an exception at connection time; the last connection stays open."""

    def __init__(self, connections: list[Any]) -> None:
        self.connections = connections
        self.opened = 0

    def __call__(self, _filter: Any) -> Any:
        script = self.connections[self.opened]
        self.opened += 1
        last = self.opened == len(self.connections)

        @asynccontextmanager
        async def connect() -> AsyncIterator[Any]:
            if isinstance(script, Exception):
                raise script

            async def events() -> AsyncIterator[Event]:
                for item in script:
                    yield item() if callable(item) else item
                if last:
                    await anyio.sleep_forever()
                raise ConnectionError("dropped")

            yield events()

        return connect()


def test_the_stream_hears_live_runs_polls_on_every_connection_and_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_events, "BACKOFF_S", (0.0,))
    live = [uuid4(), uuid4()]
    deployment = uuid4()
    now = datetime.datetime.now(datetime.UTC)
    script = Script(
        [
            [
                event("prefect.flow-run.Scheduled", uuid4(), now - datetime.timedelta(minutes=1)),
                lambda: event("prefect.flow-run.Scheduled", live[0], now_utc()),
                lambda: event("prefect.flow-run.Running", live[0], now_utc()),
            ],
            OSError("refused"),
            [
                lambda: event("prefect.deployment.updated", deployment, now_utc(), "deployment"),
                lambda: event("prefect.flow-run.AwaitingRetry", live[1], now_utc()),
            ],
        ]
    )
    heard: list[UUID] = []
    changed: list[UUID] = []
    polls: list[bool] = []

    async def on_connected() -> None:
        polls.append(True)

    stream = RunStartStream(
        None,  # type: ignore[arg-type]
        heard.append,
        on_connected,
        logging.getLogger("test"),
        subscriber=script,
        on_deployment=changed.append,
    )

    async def main() -> None:
        with anyio.move_on_after(2):
            async with anyio.create_task_group() as group:
                group.start_soon(stream.run)
                while len(heard) < 2:
                    await anyio.sleep(0.01)
                group.cancel_scope.cancel()

    anyio.run(main)
    assert heard == live  # the replayed event (before the connection) is not heard
    assert changed == [deployment]
    assert len(polls) == stream.connections == 2  # a poll at each connection
    assert script.opened == 3  # connected, refused, connected again


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

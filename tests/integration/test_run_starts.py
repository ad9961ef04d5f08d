"""Runs start when they are created: real warm workers (`prefect worker start`) against the
real test server hear their pool's new runs on Prefect's events stream and claim them at
once, one claim per run however many hosts heard it; with the stream down, the timed poll
still starts them. The poll is set far above what the claims take (60 s), so a run started
within seconds was not started by the poll."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.settings import PREFECT_API_URL

from tests.conftest import AwsEnv
from tests.integration.helpers import FAST, outcome, png, upload
from tests.integration.stream_proxy import StreamBlocker
from tests.integration.warm import (
    create_pool_and_deployment,
    final_state,
    ready,
    submit,
    wait_for,
    warm_worker,
)

pytestmark = pytest.mark.usefixtures("prefect_api")

SLOW_POLL = {"PREFECT_WORKER_QUERY_SECONDS": "60"}
LISTENING = "listening for this pool's run starts on the events stream"
# A claim takes 25-65 ms here. The median of three must be under a second; each one far
# below the 60 s poll (whose next round comes 42 s or more after the last, with Prefect's
# jitter), with room for one of the test server's SQLite stalls under the suite's load.
CLAIM_S = 1.0
CLAIM_BOUND_S = 5.0


def claim_s(client: SyncPrefectClient, run_id: Any) -> float:
    """Seconds from the run's Scheduled state to its Pending state (the claim), by the
    server's own timestamps."""
    states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
    scheduled = next(s for s in states if s.is_scheduled())
    pending = [s for s in states if s.is_pending()]
    assert len(pending) == 1, [s.name for s in states]  # one claim
    return (pending[0].timestamp - scheduled.timestamp).total_seconds()


@pytest.fixture
def pool(client: SyncPrefectClient) -> tuple[str, Any]:
    return create_pool_and_deployment(client)


def test_a_run_is_claimed_when_it_is_created_not_at_the_next_poll(
    aws: AwsEnv, client: SyncPrefectClient, pool: tuple[str, Any], tmp_path: Path
) -> None:
    clients, settings = aws
    name, deployment_id = pool
    log = tmp_path / "worker.log"
    with warm_worker(name, log, SLOW_POLL):
        wait_for(lambda: ready(log) and LISTENING in log.read_text(), 120, "a listening worker")
        waits = []
        for i in range(3):
            ref = upload(clients, settings.storage.uploads_bucket, f"heard{i}.png", png(), FAST)
            ref = ref.model_copy(update={"event_time": datetime.now(UTC)})
            run = client.create_flow_run_from_deployment(
                deployment_id, parameters={"objects": [ref.as_parameter()]}
            )
            assert final_state(client, run.id, timeout_s=60).is_completed()
            status, doc = outcome(clients, settings.storage.results_bucket, ref)
            assert status == "completed"
            waits.append(claim_s(client, run.id))
            # The queue wait, hop by hop: the worker's claim is one of them.
            t = doc["timings_ms"]
            assert {"batching", "claim", "run_start"} <= set(t), t
            hops = t["batching"] + t["claim"] + t["run_start"]
            assert hops == pytest.approx(t["queue_wait"], abs=1.0), t
    print(f"claimed {[round(w, 3) for w in waits]} s after creation (poll 60 s)")
    assert sorted(waits)[1] < CLAIM_S and max(waits) < CLAIM_BOUND_S, waits
    assert log.read_text().count("claiming it") == 3


def test_two_hosts_that_hear_the_same_run_make_one_claim(
    aws: AwsEnv, client: SyncPrefectClient, pool: tuple[str, Any], tmp_path: Path
) -> None:
    clients, settings = aws
    name, deployment_id = pool
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with ExitStack() as stack:
        for log in logs:
            stack.enter_context(warm_worker(name, log, SLOW_POLL))
        wait_for(
            lambda: all(ready(log) and LISTENING in log.read_text() for log in logs),
            180,
            "two listening workers",
        )
        runs = []
        for i in range(3):
            run, refs = submit(client, clients, settings, deployment_id, f"both{i}")
            assert final_state(client, run.id, timeout_s=60).is_completed()
            runs.append((run, refs))
    for run, refs in runs:
        assert claim_s(client, run.id) < CLAIM_BOUND_S  # one Pending state: one claim
        assert outcome(clients, settings.storage.results_bucket, refs[0])[0] == "completed"
    # Both hosts were idle at each creation: both heard each run and went for it (the
    # slower one may find it claimed already, and says so); one of them claimed it.
    texts = [log.read_text() for log in logs]
    for run, _ in runs:
        heard = [f"heard flow run {run.id}" in text for text in texts]
        assert heard == [True, True], (run.id, heard)
        assert any(f"heard flow run {run.id} (Scheduled): claiming it" in t for t in texts)


@pytest.fixture
def stream_down() -> Iterator[str]:
    """The test API behind a relay that refuses the events stream out (`/events/out`):
    REST and the events-in websocket work, the stream the worker listens on does not."""
    blocker = StreamBlocker(str(PREFECT_API_URL.value())).start()
    try:
        yield blocker.url
    finally:
        blocker.stop()


def test_with_the_events_stream_down_the_timed_poll_still_starts_runs(
    aws: AwsEnv,
    client: SyncPrefectClient,
    pool: tuple[str, Any],
    stream_down: str,
    tmp_path: Path,
) -> None:
    clients, settings = aws
    name, deployment_id = pool
    log = tmp_path / "worker.log"
    env = {"PREFECT_API_URL": stream_down, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with warm_worker(name, log, env):
        wait_for(lambda: ready(log), 120, "the slot to load")
        wait_for(lambda: "run-start events unavailable" in log.read_text(), 60, "a down stream")
        run, refs = submit(client, clients, settings, deployment_id, "polled")
        assert final_state(client, run.id, timeout_s=60).is_completed()
    assert outcome(clients, settings.storage.results_bucket, refs[0])[0] == "completed"
    text = log.read_text()
    assert LISTENING not in text and "claiming it" not in text  # the poll took it

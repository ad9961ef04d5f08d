"""The fleet view against a real Prefect API: batch events in, one artifact out."""

from __future__ import annotations

import time
import uuid

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.events import emit_event

from deployments.services.fleet_view import ARTIFACT_KEY, FleetView
from img2img.config.monitor import MonitorSettings
from img2img.scaling.policy import Decision, Observation

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_batches_become_fleet_figures_in_one_artifact_across_restarts(
    client: SyncPrefectClient,
) -> None:
    pool = f"fleet-{uuid.uuid4().hex[:8]}"
    pool_id = client.create_work_pool(WorkPoolCreate(name=pool, type="process")).id
    on_pool = {
        "prefect.resource.id": f"prefect.work-pool.{pool_id}",
        "prefect.resource.role": "work-pool",
    }
    monitor = MonitorSettings(fleet_interval_s=5)
    obs = Observation(
        now=0.0, queued=1, running=1, current_desired=1, recent_run_s=None, arrival_rate=0.1
    )
    decision = Decision(1, "hold", 0.5, 1, 1)
    view = FleetView(client, pool, monitor, slots_per_host=1)
    view.observe(obs, decision)  # the first tick refreshes at once

    for completed, failed in ((8, 0), (6, 2)):
        emit_event(
            event="img2img.batch.failed" if failed else "img2img.batch.completed",
            resource={"prefect.resource.id": "img2img.pipeline"},
            related=[on_pool],
            payload={"completed": completed, "failed": failed, "e2e_ms": [1500.0] * completed},
        )
    # Another pool's batch must not count.
    emit_event(
        event="img2img.batch.completed",
        resource={"prefect.resource.id": "img2img.pipeline"},
        related=[
            {"prefect.resource.id": "prefect.work-pool.other", "prefect.resource.role": "work-pool"}
        ],
        payload={"completed": 100, "failed": 0},
    )
    deadline = time.monotonic() + 30
    while view.window.sample(time.time()).images < 16 and time.monotonic() < deadline:
        time.sleep(0.5)  # the events reach the API a moment after they are sent
        view.refresh()
    time.sleep(1.0)
    sample = view.refresh()  # nothing counted twice on a later read
    assert sample.images == 16 and sample.failed == 2
    assert sample.e2e_p95_s == pytest.approx(1.5) and sample.cost_per_image_usd is not None

    restarted = FleetView(client, pool, monitor, slots_per_host=1)
    restarted.observe(obs, decision)  # a restarted service updates the same artifact
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
    )
    assert len(artifacts) == 1
    assert "hosts paid / online" in str(artifacts[0].data)

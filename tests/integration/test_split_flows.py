"""The split topology's two flows in this process, against a real moto server, a real
Prefect API and the tiny real models: the stage-1 flow hands its images to exactly one
stage-2 run, the stage-2 flow finishes them from the directory bucket, and what goes wrong
at the hand-off ends as failure records that say why."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest

from flows.split import img2img_generate, img2img_upscale
from img2img.intake.keys import keys_for
from img2img.pipeline.handoff import handoff_key
from img2img.pipeline.topology import UPSCALE_POOL
from tests.conftest import AwsEnv
from tests.integration.helpers import outcome, png, upload

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(autouse=True)
def _fresh_deployment_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.handoff

    monkeypatch.setattr(tasks.handoff, "_deployment_ids", {})


def _upscale_deployment(client: Any) -> Any:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=UPSCALE_POOL.pool, type="process"))
    flow_id = client.create_flow_from_name(UPSCALE_POOL.flow)
    return client.create_deployment(
        flow_id=flow_id,
        name=UPSCALE_POOL.deployment.split("/", 1)[1],
        entrypoint="flows.split.img2img_upscale",
        work_pool_name=UPSCALE_POOL.pool,
    )


def test_generate_hands_off_once_and_upscale_finishes_from_the_directory_bucket(
    aws: AwsEnv, client: Any
) -> None:
    clients, settings = aws
    st = settings.storage
    deployment = _upscale_deployment(client)
    uploaded = datetime.now(UTC)
    refs = [
        upload(clients, st.uploads_bucket, f"split/{i}.png", png()).model_copy(
            update={"event_time": uploaded}
        )
        for i in range(3)
    ]

    first = img2img_generate(objects=refs, return_state=True)

    assert first.is_completed(), first.message
    assert "3 handed to stage 2" in str(first.message)
    for ref in refs:  # nothing written yet: the stage-2 run writes the outcomes
        assert outcome(clients, st.results_bucket, ref)[0] == "missing"
        assert keys_for(ref).generate in _keys(clients, st.stage_bucket)
    generate_id = str(first.state_details.flow_run_id)
    runs = client.read_flow_runs()
    handed = [r for r in runs if r.deployment_id == deployment]
    assert len(handed) == 1
    run = handed[0]
    assert run.parameters["generate_run"] == generate_id
    assert sorted(o["key"] for o in run.parameters["objects"]) == sorted(r.key for r in refs)
    # A retried stage-1 run asks for its stage-2 run again and gets the same one back.
    again = client.create_flow_run_from_deployment(
        deployment, parameters=run.parameters, idempotency_key=handoff_key(generate_id)
    )
    assert again.id == run.id

    # Stage 1's output of one image is gone by the time stage 2 runs (a lifecycle rule):
    # that image fails at the hand-off, saying so; the others complete.
    lost = refs[1]
    clients.s3.delete_object(Bucket=st.stage_bucket, Key=keys_for(lost).generate)
    second = img2img_upscale(**run.parameters, return_state=True)

    assert second.is_failed(), second.message  # one image failed: the run says so
    for ref in refs:
        status, doc = outcome(clients, st.results_bucket, ref)
        if ref is lost:
            assert status == "failed" and doc["stage"] == "handoff", doc
            assert "gone" in doc["reason"] and "submit the upload again" in doc["reason"]
            continue
        assert status == "completed", doc
        assert doc["generate_flow_run_id"] == generate_id
        assert doc["flow_run_id"] == str(second.state_details.flow_run_id)
        timings = doc["timings_ms"]
        assert timings["generate"] > 0 and timings["upscale"] > 0 and timings["handoff"] >= 0
        # Both runs' stages and the hand-off add up to the image's whole time.
        # queue_wait is there whole and hop by hop (intake, batching, claim, run_start).
        parts = sum(v for k, v in timings.items() if k not in ("total", "queue_wait"))
        assert parts == pytest.approx(timings["total"], abs=2.0), timings
        # Stage 1's queue wait, hop by hop, travels with the image to the stage-2 run.
        hops = timings.get("batching", 0) + timings.get("run_start", 0)
        assert timings["queue_wait"] > 0 and hops == pytest.approx(timings["queue_wait"], abs=1)


def test_without_the_upscale_deployment_every_image_gets_a_record_that_says_so(
    aws: AwsEnv, client: Any
) -> None:
    from prefect.exceptions import ObjectNotFound

    clients, settings = aws
    st = settings.storage
    with contextlib.suppress(ObjectNotFound):  # the API outlives a test: stage 2 may exist
        client.delete_deployment(client.read_deployment_by_name(UPSCALE_POOL.deployment).id)
    refs = [upload(clients, st.uploads_bucket, f"nosplit/{i}.png", png()) for i in range(2)]

    state = img2img_generate(objects=refs, return_state=True)

    assert state.is_failed()
    for ref in refs:
        status, doc = outcome(clients, st.results_bucket, ref)
        assert status == "failed" and doc["stage"] == "handoff", doc
        assert "img2img-upscale/inf2-upscale does not exist" in doc["reason"]
        assert doc["retryable"] is False


def _keys(clients: Any, bucket: str) -> set[str]:
    pages = clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}

"""The reconciler against real S3 (moto over HTTP) and a real Prefect API: uploads the
event path lost are found by listing, and resubmitting them twice creates one run."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.reconciler import reconcile
from img2img.outcomes import write_failure
from tests.conftest import AwsEnv
from tests.integration.helpers import png, upload

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_lost_uploads_are_listed_and_resubmitted_once(aws: AwsEnv, client: Any) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate

    clients, settings = aws
    pool = "reconcile-pool"
    client.create_work_pool(WorkPoolCreate(name=pool, type="img2img-warm"))
    flow_id = client.create_flow_from_name("img2img-pipeline")
    client.create_deployment(
        flow_id=flow_id,
        name="inf2",
        entrypoint="flows.pipeline.img2img_pipeline",
        work_pool_name=pool,
    )
    settings = settings.model_copy(
        update={"autoscaler": settings.autoscaler.model_copy(update={"pool": pool})}
    )
    bucket = settings.storage.uploads_bucket
    refs = [upload(clients, bucket, f"lost/{i}.png", png()) for i in range(5)]
    upload(clients, bucket, "elsewhere/x.png", png())
    write_failure(
        clients.s3,
        settings.storage.results_bucket,
        refs[0],
        stage="preprocess",
        reason="test",
        retryable=False,
        flow_run_id=None,
    )

    listed = reconcile(clients.s3, client, settings, prefix="lost/")
    assert listed.uploads == 5 and listed.with_outcome == 1
    assert sorted(listed.missing) == sorted(r.uri for r in refs[1:])
    assert not listed.resubmitted_runs

    first = reconcile(clients.s3, client, settings, prefix="lost/", resubmit=True)
    assert len(first.resubmitted_runs) == 1
    [run_id] = first.resubmitted_runs
    objects = client.read_flow_run(run_id).parameters["objects"]
    assert sorted(o["key"] for o in objects) == [f"lost/{i}.png" for i in range(1, 5)]

    again = reconcile(clients.s3, client, settings, prefix="lost/", resubmit=True)
    assert again.missing == [] and again.live == 4 and again.resubmitted_runs == []

    young = reconcile(clients.s3, client, settings, prefix="elsewhere/", older_than_s=3600)
    assert young.uploads == 1 and young.missing == []  # too young: left to the event path

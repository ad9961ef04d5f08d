"""The reconciler against real S3 (moto over HTTP) and a real Prefect API: uploads the
event path lost are found by listing, and resubmitting them twice creates one run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deployments.services.reconciler import reconcile
from img2img.delivery.outcomes import write_failure
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

    # With lanes, recovery work goes to the last lane (bulk): it must not take the places
    # and device turns kept for interactive uploads.
    from img2img.config.lanes import LaneSettings

    laned = settings.model_copy(update={"lanes": LaneSettings(enabled=True)})
    bulk = reconcile(clients.s3, client, laned, prefix="elsewhere/", resubmit=True)
    [bulk_run] = bulk.resubmitted_runs
    assert client.read_flow_run(bulk_run).work_queue_name == "bulk"
    assert client.read_work_queue_by_name("bulk", work_pool_name=pool).priority == 10


def test_a_held_backlog_holds_the_periodic_reconcile_back_for_a_while() -> None:
    from deployments.services.reconciler import held_older_than_s

    # Messages last all gone 600 s ago: uploads of the last 600 s may be held.
    assert held_older_than_s(1000.0, 400.0, older_than_s=180, hold_max_s=7200) == 600
    # Gone just now (or no dispatcher receiving: none in flight): the usual age.
    assert held_older_than_s(1000.0, 1000.0, older_than_s=180, hold_max_s=7200) == 180
    # Held for longer than the most it may: reconciled all the same.
    assert held_older_than_s(90_000.0, 0.0, older_than_s=180, hold_max_s=7200) == 7200
    # Not seen clear since the service started: the most.
    assert held_older_than_s(1000.0, None, older_than_s=180, hold_max_s=7200) == 7200


def test_img2img_recover_reconciles_lost_uploads_on_its_own_schedule(
    aws: AwsEnv, client: Any, tmp_path: Path
) -> None:
    """The catch-all, as operators run it: `img2img recover` (a real child process) runs the
    reconciler every `recovery.reconcile_interval_s` with no one asking, and resubmits the
    uploads the event path lost (here: uploads whose notifications nobody reads) in one
    run."""
    from prefect.settings import PREFECT_API_URL

    from tests.integration.warm import create_pool_and_deployment, wait_for

    clients, settings = aws
    pool, deployment_id = create_pool_and_deployment(client)
    refs = [
        upload(clients, settings.storage.uploads_bucket, f"periodic/{i}.png", png())
        for i in range(3)
    ]

    def reconciled() -> list[Any]:
        return [
            r
            for r in client.read_flow_runs(limit=200)
            if r.deployment_id == deployment_id and "reconcile" in (r.tags or [])
        ]

    assert reconciled() == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "IMG2IMG_AUTOSCALER__POOL": pool,
            "IMG2IMG_DISPATCH__DEPLOYMENT": f"img2img-pipeline/{pool}",
            "IMG2IMG_RECOVERY__INTERVAL_S": "0.5",
            "IMG2IMG_RECOVERY__RECONCILE_INTERVAL_S": "1",
            "IMG2IMG_RECOVERY__RECONCILE_OLDER_THAN_S": "0",
        }
    )
    log = tmp_path / "recover.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "recover"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_for(reconciled, 120, "a reconcile run", interval=0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    runs = reconciled()
    assert len(runs) == 1, [r.name for r in runs]
    objects = sorted(o["key"] for o in runs[0].parameters["objects"])
    assert objects == sorted(r.key for r in refs)

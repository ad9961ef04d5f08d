"""The split topology end to end: stage 1 on pool inf2-generate, stage 2 on inf2-upscale, on a
fresh local stack of real processes (moto, Prefect server, dispatcher, the autoscaler
sizing both pools, the recovery service, warm workers on each pool).

`img2img chaos --scenario upscale-worker-kill` uploads 32 images and SIGKILLs the stage-2
pool's worker once a stage-2 run is running on it: every upload must still end as exactly
one outcome, stage 1 must not run again, and both pools must go back to zero hosts. Then the
runs themselves are read: each stage-2 run came from a stage-1 run's hand-off (one per
stage-1 run, linked both ways), its timing table shows both stages and the hand-off in one
row per image, and each pool's hosts loaded only their own stage's model.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for
from tests.conftest import free_port
from tests.integration.helpers import img2img, stack_client, stack_env

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

IMAGES = 32


def test_split_stack_loses_nothing_when_an_upscale_worker_dies(tmp_path: Path) -> None:
    metrics_port = free_port()
    env = stack_env(
        tmp_path / "state",
        {
            "IMG2IMG_TOPOLOGY": "split",
            "IMG2IMG_LOCAL__METRICS_PORT": str(metrics_port),
            "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "6",
            "IMG2IMG_SCALING__INTERVAL_S": "1",
            # Ten heartbeats: a stage-1 worker whose beats the local SQLite held back under
            # the full suite's load is not taken for dead (its run would be re-run).
            "IMG2IMG_RECOVERY__ORPHAN_AFTER_S": "20",
            "IMG2IMG_DISPATCH__VISIBILITY_TIMEOUT_S": "35",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",
        },
    )
    try:
        done = img2img(
            ["chaos", "--scenario", "upscale-worker-kill", "--images", str(IMAGES), "--json"],
            env,
            600,
        )
        assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
        line = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(line))
        assert line["uploads"] == IMAGES and line["results"] == IMAGES, line
        assert line["lost"] == 0 and line["duplicated"] == 0, line
        assert line["generate_reruns"] == 0, line  # the stage-2 kill cost stage 1 nothing
        assert line["handoff_p50_ms"] is not None and line["handoff_p50_ms"] >= 0, line
        assert line["hosts_after_idle"] == 0, line

        status = json.loads(img2img(["local", "status"], env, 60).stdout)
        assert status["dispatcher"]["running"] and status["autoscaler"]["running"]
        _runs_hand_off_once_and_link(env)
        _results_name_both_runs(env)
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
        ).read()
        text = metrics.decode()
        for pool in ("inf2-generate", "inf2-upscale"):
            assert f'img2img_hosts_wanted{{pool="{pool}"}}' in text, text[:2000]
        top = img2img(
            ["top", "--once", "--url", f"http://127.0.0.1:{metrics_port}/metrics"], env, 60
        )
        assert top.returncode == 0 and "inf2-upscale" in top.stdout, top.stdout + top.stderr
    finally:
        down = img2img(["local", "down"], env, 300)
        assert down.returncode == 0, down.stderr[-2000:]


def _prefect(env: dict[str, str]) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(f"http://127.0.0.1:{env['IMG2IMG_LOCAL__PREFECT_PORT']}/api")


def _runs_hand_off_once_and_link(env: dict[str, str]) -> None:
    """Every stage-2 run names the stage-1 run that made it; no stage-1 run made two; every
    upload went through stage 2; the timing table of a stage-2 run has the hand-off column
    and both stages per image, and its summary links to its stage-1 run."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowFilter,
        FlowFilterName,
    )

    with _prefect(env) as client:
        generate = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["img2img-generate"])), limit=200
        )
        upscale = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["img2img-upscale"])), limit=200
        )
        assert generate and upscale
        parents = [r.parameters["generate_run"] for r in upscale if "img2img-split" not in r.tags]
        assert len(parents) == len(set(parents)), parents  # one stage-2 run per stage-1 run
        assert set(parents) <= {str(r.id) for r in generate}
        assert sum(len(r.parameters["objects"]) for r in generate) == IMAGES
        assert all(r.state is not None and r.state.is_completed() for r in generate), [
            (r.name, r.state) for r in generate
        ]
        ran = next(r for r in upscale if r.state is not None and r.state.is_completed())
        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["img2img-stage-timings"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[ran.id]),
            )
        )
        rows = json.loads(tables[0].data)
        images = [r for r in rows if not str(r["image"]).startswith("(")]
        assert images and all(
            r["generate"] is not None and r["handoff"] is not None and r["upscale"] is not None
            for r in images
        ), rows
        # The summary above the table links to the stage-1 run.
        assert f"/runs/flow-run/{ran.parameters['generate_run']}" in str(tables[0].description)


def _results_name_both_runs(env: dict[str, str]) -> None:
    """A result's document names the stage-1 run and the stage-2 run, and the host that
    ran stage 2 loaded one model (the upscaler), not both."""
    s3 = stack_client(env, "s3")
    listed = s3.list_objects_v2(Bucket="img2img-results", Prefix="results/")["Contents"]
    docs = [
        json.loads(s3.get_object(Bucket="img2img-results", Key=o["Key"])["Body"].read())
        for o in listed
        if o["Key"].endswith(".json")
    ]
    assert len(docs) == IMAGES
    for doc in docs:
        assert doc["generate_flow_run_id"] and doc["flow_run_id"] != doc["generate_flow_run_id"]
        assert doc["worker"]["model_loads"] == 1, doc["worker"]
        assert doc["timings_ms"]["handoff"] >= 0
        ref = ObjectRef(
            bucket="img2img-uploads", key=doc["source"].split("/", 3)[3], etag=doc["etag"]
        )
        assert keys_for(ref).result.endswith(doc["result"].rsplit("/", 1)[-1])

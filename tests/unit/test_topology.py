"""The split topology's pure parts: which pool runs what, the settings that choose it, the
hand-off state between the two runs, and how reports and scrapes show two pools."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from PIL import Image

from deployments.services.autoscalers import build_autoscalers
from img2img.config.settings import Settings
from img2img.intake.events import ObjectRef
from img2img.intake.params import ImageParams
from img2img.observe.report import batch_event, build_report
from img2img.observe.scrape import parse
from img2img.pipeline.handoff import (
    HandoffState,
    batch_ready,
    handoff_key,
    handoff_state,
    restore,
    run_origin,
)
from img2img.pipeline.jobs import ImageJob, finish_timings, result_record
from img2img.pipeline.topology import (
    GENERATE_POOL,
    SINGLE_POOL,
    UPSCALE_POOL,
    artifact_key,
    check_pool_groups,
    dispatch_target,
    entry_deployment,
    pools,
    stages_for_pool,
)
from img2img.scaling.fleet import BatchDigest, FleetWindow

T0 = 1_700_000_000.0


def test_each_topology_names_its_pools_and_what_their_hosts_load() -> None:
    assert pools("single") == (SINGLE_POOL,)
    assert [r.pool for r in pools("split")] == ["inf2-generate", "inf2-upscale"]
    assert entry_deployment("single") == "img2img-pipeline/inf2"
    assert entry_deployment("split") == "img2img-generate/inf2-generate"
    assert stages_for_pool("inf2-generate") == ("generate",)
    assert stages_for_pool("inf2-upscale") == ("upscale",)
    assert stages_for_pool("inf2") == stages_for_pool("my-own-pool") == ("generate", "upscale")
    # An operator's own single pool keeps the single deployment.
    assert pools("single", "gpu")[0].pool == "gpu"
    assert pools("single", "gpu")[0].deployment == SINGLE_POOL.deployment
    assert UPSCALE_POOL.flow == "img2img-upscale"
    assert artifact_key("img2img-fleet", "inf2") == "img2img-fleet"
    assert artifact_key("img2img-fleet", "my-pool") == "img2img-fleet"
    assert artifact_key("img2img-fleet", "inf2-upscale") == "img2img-fleet-inf2-upscale"


def test_the_dispatcher_follows_the_topology_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("IMG2IMG_TOPOLOGY", "IMG2IMG_DISPATCH__DEPLOYMENT"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    assert dispatch_target(settings) == "img2img-pipeline/inf2"
    settings.topology = "split"
    assert dispatch_target(settings) == GENERATE_POOL.deployment
    monkeypatch.setenv("IMG2IMG_TOPOLOGY", "split")
    assert dispatch_target(Settings()) == GENERATE_POOL.deployment
    monkeypatch.setenv("IMG2IMG_DISPATCH__DEPLOYMENT", "mine/custom")
    chosen = Settings()
    chosen.topology = "single"
    assert dispatch_target(chosen) == "mine/custom"


def test_split_on_aws_needs_a_group_per_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMG2IMG_TOPOLOGY", "split")
    monkeypatch.setenv("IMG2IMG_AUTOSCALER__TARGET", "asg")
    monkeypatch.setenv("IMG2IMG_AUTOSCALER__ASG_NAME", "img2img")
    monkeypatch.setenv("IMG2IMG_AUTOSCALER__POOL_GROUPS", '{"inf2-generate": "p1"}')
    with pytest.raises(ValueError, match="inf2-upscale"):
        check_pool_groups(Settings())
    with pytest.raises(ValueError, match="inf2-upscale"):  # before anything is built
        build_autoscalers(Settings(), prefect=None)  # type: ignore[arg-type]
    monkeypatch.setenv("IMG2IMG_TOPOLOGY", "single")
    check_pool_groups(Settings())  # one pool: the one group named
    monkeypatch.setenv("IMG2IMG_TOPOLOGY", "split")
    monkeypatch.setenv(
        "IMG2IMG_AUTOSCALER__POOL_GROUPS", '{"inf2-generate": "p1", "inf2-upscale": "p2"}'
    )
    check_pool_groups(Settings())


def _job(name: str = "a.png") -> ImageJob:
    ref = ObjectRef(
        bucket="up",
        key=f"in/{name}",
        etag="e1",
        event_time=datetime.fromtimestamp(T0, UTC),
    )
    job = ImageJob.for_ref(ref)
    job.params = ImageParams(prompt="p", steps=4, upscale_steps=2)
    job.seed = 7
    job.request_id = "req-1"
    job.timings.started = T0 + 1
    job.timings["queue_wait"] = 1000.0
    job.timings["copy"] = 20.0
    job.timings["generate"] = 300.0
    job.timings.spans += [("copy", T0 + 1, T0 + 1.02), ("generate", T0 + 1.5, T0 + 1.8)]
    job.device_batch["generate"] = 4
    job.output_written["generate"] = T0 + 1.9
    return job


def test_the_handoff_carries_what_upscale_needs_and_times_the_gap() -> None:
    job = _job()
    job.timings["other_wait"] = 55.0  # a wait computed in stage 1 must not travel
    other = _job("b.png")
    other.output_written["generate"] = T0 + 1.6  # its device call came first
    assert batch_ready([job, other]) == T0 + 1.9  # the batch is ready with its last output
    assert batch_ready([], now=T0 + 5) == T0 + 5
    state = HandoffState.model_validate(handoff_state(job, T0 + 1.9).model_dump(mode="json"))
    assert "other_wait" not in state.timings_ms and state.timings_ms["queue_wait"] == 1000.0
    assert state.written == T0 + 1.9 and state.run_started == T0 + 1

    taken = ImageJob.for_ref(job.ref)
    restore(taken, state, upscale_started=T0 + 2.4, generate_run="run-1")
    assert taken.params == job.params and taken.seed == 7 and taken.request_id == "req-1"
    assert taken.timings["handoff"] == pytest.approx(500.0)
    assert taken.timings.spans[-1] == ("handoff", T0 + 1.9, T0 + 2.4)
    assert taken.device_batch == {"generate": 4} and taken.linked_run == "run-1"
    # The result names the run that ran stage 1.
    taken.upscale = Image.new("RGB", (8, 8))
    assert result_record(taken, "res", "run-2")["generate_flow_run_id"] == "run-1"
    # A clock behind on the stage-2 host never makes a negative hand-off.
    early = ImageJob.for_ref(job.ref)
    restore(early, state, upscale_started=T0 + 1.5, generate_run=None)
    assert early.timings["handoff"] == 0.0
    assert run_origin([state], fallback=T0 + 9) == T0 + 1
    # One stage-2 run per stage-1 run: the key is the stage-1 run's id in a fixed form, which
    # must not change between releases (a run retried across an upgrade keeps its stage-2).
    assert handoff_key("abc") == "handoff:abc" != handoff_key("abd")


def test_reports_show_the_handoff_column_only_when_there_was_one() -> None:
    single = _job("one.png")
    single.status = "completed"
    finish_timings([single], datetime.fromtimestamp(T0 + 3, UTC))
    report = build_report([single], 2.0, T0 + 1, stale_after_s=3600)
    assert "handoff" not in report.rows[0]

    # The stage-1 run: its handed-off image is on the chart, not in the end-to-end figures.
    handed = _job("two.png")
    handed.status = "handed_off"
    finish_timings([handed], datetime.fromtimestamp(T0 + 2, UTC))
    report = build_report([handed], 1.0, T0 + 1, stale_after_s=3600)
    assert report.rows[0]["image"].endswith("(to stage 2)")
    assert report.e2e_ms == [] and len(report.lines) == 1
    _, payload = batch_event(report, [handed])
    assert payload["handed_off"] == 1 and payload["completed"] == 0

    # The stage-2 run: one row per image with both stages and the hand-off.
    taken = ImageJob.for_ref(handed.ref)
    restore(taken, handoff_state(_job("two.png"), T0 + 1.9), T0 + 2.4, "run-1")
    taken.timings.add("upscale", 200.0)
    taken.timings.spans.append(("upscale", T0 + 2.5, T0 + 2.7))
    taken.status = "completed"
    finish_timings([taken], datetime.fromtimestamp(T0 + 3, UTC))
    row = build_report([taken], 0.6, T0 + 1, stale_after_s=3600).rows[0]
    assert row["generate"] == 300 and row["handoff"] == 500 and row["upscale"] == 200
    assert row["total"] == 3000


def test_a_pool_that_hands_off_counts_that_work_as_its_throughput() -> None:
    digest = BatchDigest.from_payload(T0, {"completed": 0, "failed": 1, "handed_off": 7})
    assert digest.images == 8
    window = FleetWindow(window_s=300, price_per_hour=1.0, slots_per_host=1)
    window.add_hosts(T0, hosts=1, running_runs=1, queued_runs=0)
    window.add_batch(digest)
    assert window.sample(T0 + 60).images == 8


def test_a_scrape_keeps_each_pools_gauges_apart() -> None:
    text = "\n".join(
        [
            "# TYPE img2img_hosts_wanted gauge",
            'img2img_hosts_wanted{pool="inf2-generate"} 2.0',
            'img2img_hosts_wanted{pool="inf2-upscale"} 5.0',
            "# TYPE img2img_images counter",
            'img2img_images_total{outcome="completed",pool="inf2-upscale"} 9.0',
            'img2img_images_total{outcome="failed",pool="inf2-generate"} 1.0',
            'img2img_images_total{outcome="failed",pool="inf2-upscale"} 2.0',
            'img2img_images_total{outcome="handed_off",pool="inf2-generate"} 11.0',
        ]
    )
    scraped = parse(text)
    assert scraped.pool_gauges["inf2-generate"]["img2img_hosts_wanted"] == 2.0
    assert scraped.pool_gauges["inf2-upscale"]["img2img_hosts_wanted"] == 5.0
    assert scraped.gauges["img2img_hosts_wanted"] == 2.0  # the first pool listed
    assert scraped.images == {"completed": 9.0, "failed": 3.0, "handed_off": 11.0}


def test_alerts_cover_each_pool_of_a_split_topology() -> None:
    from deployments.services.alerts import definitions, pipeline_definitions

    single = pipeline_definitions(pools("single"), "block-1")
    assert single == definitions("inf2", "block-1", "img2img-pipeline")
    split = pipeline_definitions(pools("split"), "block-1")
    names = [a["name"] for a in split]
    assert len(names) == len(set(names))
    assert "img2img pool has no ready worker (inf2-upscale)" in names
    assert "img2img pool has no ready worker (inf2-generate)" in names
    # The dead-letter queue is the pipeline's, not a pool's: one alert.
    assert sum("dead-letter" in n for n in names) == 1
    flows = json.dumps([a for a in split if a["name"].startswith("img2img batch failed")])
    assert "img2img-generate" in flows and "img2img-upscale" in flows


def test_each_pool_counts_its_own_device_time_by_lane_and_tenant() -> None:
    def placed(name: str, lane: str, tenant: str) -> ImageJob:
        job = _job(name)
        job.ref = job.ref.model_copy(update={"lane": lane, "tenant": tenant})
        return job

    # One pool: both stages; a failed image counts its device time too.
    done, failed, plain = placed("a.png", "bulk", "acme"), placed("b.png", "bulk", "acme"), _job()
    done.timings.add("upscale", 200.0)
    done.status, failed.status, plain.status = "completed", "failed", "completed"
    finish_timings([done, failed, plain], datetime.fromtimestamp(T0 + 3, UTC))
    report = build_report([done, failed, plain], 2.0, T0 + 1, stale_after_s=3600)
    _, payload = batch_event(report, [done, failed, plain])
    (group,) = payload["groups"]  # the unplaced image (lanes and tenants off) is in none
    assert (group["lane"], group["tenant"], group["completed"], group["failed"]) == (
        "bulk",
        "acme",
        1,
        1,
    )
    assert group["device_ms"] == pytest.approx(300 + 200 + 300)
    assert len(group["e2e_ms"]) == 2

    # Split: stage 1 counts generate for the image it handed off; stage 2 counts upscale only
    # (stage 1's timings came with the image).
    handed = placed("c.png", "interactive", "zed")
    handed.status = "handed_off"
    one = build_report([handed], 1.0, T0 + 1, stale_after_s=3600)
    assert one.groups[0]["device_ms"] == pytest.approx(300) and one.groups[0]["handed_off"] == 1
    taken = ImageJob.for_ref(handed.ref)
    restore(taken, handoff_state(handed, T0 + 1.9), T0 + 2.4, "run-1")
    taken.timings.add("upscale", 200.0)
    taken.status = "completed"
    two = build_report([taken], 0.6, T0 + 1, stale_after_s=3600)
    assert two.groups[0]["device_ms"] == pytest.approx(200)
    assert batch_event(build_report([plain], 1.0, T0 + 1, 3600), [plain])[1].get("groups") is None


def test_each_pools_autoscaler_counts_the_lower_lanes_and_its_view_knows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMG2IMG_AUTOSCALER__CLOUDWATCH_NAMESPACE", "null")
    monkeypatch.setenv("IMG2IMG_TENANTS__TOP", "3")
    plain = build_autoscalers(Settings(), prefect=None).scalers[0]  # type: ignore[arg-type]
    assert plain.lower_lanes == ()
    monkeypatch.setenv("IMG2IMG_LANES__ENABLED", "true")
    monkeypatch.setenv("IMG2IMG_TOPOLOGY", "split")
    for scaler in build_autoscalers(Settings(), prefect=None).scalers:  # type: ignore[arg-type]
        assert scaler.lower_lanes == ("bulk",)
        assert scaler.fleet is not None
        assert scaler.fleet.window.lane_order == ("interactive", "bulk")
        assert scaler.fleet.window.top_tenants == 3

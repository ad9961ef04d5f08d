from __future__ import annotations

import pytest
from prefect.events.schemas.automations import AutomationCore

from deployments.services.alerts import definitions
from img2img.config.monitor import MonitorSettings
from img2img.observe.scrape import parse
from img2img.scaling.fleet import BatchDigest, FleetWindow, markdown

T0 = 1_700_000_000.0
PRICE = 0.7582


def test_cost_per_image_counts_every_host_hour_held() -> None:
    window = FleetWindow(window_s=300, price_per_hour=PRICE, slots_per_host=2)
    window.add_hosts(T0, hosts=2, running_runs=2, queued_runs=5)
    window.add_hosts(T0 + 60, hosts=1, running_runs=0, queued_runs=0)  # one host let go
    window.add_batch(BatchDigest(T0 + 30, completed=7, failed=1, e2e_ms=(1000.0, 3000.0)))
    window.add_batch(BatchDigest(T0 + 90, completed=4, failed=0, e2e_ms=(2000.0,)))
    sample = window.sample(T0 + 120)
    # 2 hosts × 60 s + 1 host × 60 s = 180 host-seconds.
    assert sample.host_hours == pytest.approx(180 / 3600)
    assert sample.cost_usd == pytest.approx(180 / 3600 * PRICE)
    assert sample.images == 12 and sample.failed == 1
    assert sample.cost_per_image_usd == pytest.approx(180 / 3600 * PRICE / 12)
    assert sample.images_per_min == pytest.approx(12 / 2)  # over the 120 s covered
    assert sample.e2e_p50_s == pytest.approx(2.0) and sample.e2e_p95_s == pytest.approx(2.9)
    # Busy slots ÷ slots: 2 of 4 for 60 s, then 0 of 2 for 60 s.
    assert sample.duty_cycle == pytest.approx((2 * 60) / (4 * 60 + 2 * 60))
    assert sample.hosts == 1 and sample.queued_runs == 0


def test_old_batches_and_intervals_leave_the_window() -> None:
    window = FleetWindow(window_s=60, price_per_hour=PRICE, slots_per_host=1)
    window.add_hosts(T0, hosts=1, running_runs=1, queued_runs=0)
    window.add_batch(BatchDigest(T0 + 10, completed=3, failed=0))
    window.add_hosts(T0 + 100, hosts=0, running_runs=0, queued_runs=0)
    sample = window.sample(T0 + 200)
    assert sample.images == 0 and sample.cost_per_image_usd is None
    assert sample.host_hours == 0 and sample.hosts == 0


def test_a_batch_event_with_missing_fields_still_counts() -> None:
    digest = BatchDigest.from_payload(T0, {"completed": 2, "stage_ms": {"upscale": [900, 1100]}})
    assert digest.images == 2 and digest.e2e_ms == () and digest.stage_ms["upscale"] == (900, 1100)


def test_the_fleet_markdown_says_health_cost_and_basis() -> None:
    window = FleetWindow(window_s=300, price_per_hour=PRICE, slots_per_host=1)
    window.add_hosts(T0, hosts=1, running_runs=1, queued_runs=0)
    window.add_batch(BatchDigest(T0 + 30, completed=8, failed=1))
    window.dead_letters = 2
    text = markdown(window.sample(T0 + 60), "inf2", "inf2.xlarge", "data:image/png;base64,AAAA")
    assert "ATTENTION: 1 image(s) failed; 2 message(s) in the dead-letter queue" in text
    assert "cost per image | **$0.001404**" in text and "inf2.xlarge on-demand" in text
    assert "![the fleet over time](data:image/png;base64,AAAA)" in text


def test_frequent_recycles_are_called_out_in_the_view_and_alerted_at_the_same_count() -> None:
    from img2img.scaling.fleet import FREQUENT_RECYCLES

    window = FleetWindow(window_s=300, price_per_hour=PRICE, slots_per_host=1)
    window.add_hosts(T0, hosts=1, running_runs=1, queued_runs=0)
    window.slot_recycles = FREQUENT_RECYCLES - 1
    calm = markdown(window.sample(T0 + 60), "inf2", "inf2.xlarge", "")
    assert "recycled" not in calm.split("\n")[0] and "slot recycles (lately) | 2" in calm
    window.slot_recycles = FREQUENT_RECYCLES
    loud = markdown(window.sample(T0 + 60), "inf2", "inf2.xlarge", "")
    assert f"ATTENTION: {FREQUENT_RECYCLES} slots recycled lately" in loud
    alert = next(
        a
        for a in definitions("inf2", "11111111-2222-3333-4444-555555555555")
        if a["name"] == "img2img slots recycled often"
    )
    assert alert["trigger"]["threshold"] == FREQUENT_RECYCLES
    assert alert["trigger"]["match_related"]["prefect.resource.name"] == "inf2"


def test_prices_default_to_the_instance_type_and_refuse_an_unknown_one() -> None:
    assert MonitorSettings().price_per_hour == PRICE
    assert MonitorSettings(instance_type="inf2.48xlarge").price_per_hour == 12.9813
    assert (
        MonitorSettings(instance_type="trn1.2xlarge", hourly_price_usd=1.34).price_per_hour == 1.34
    )
    with pytest.raises(ValueError, match=r"trn1\.2xlarge.*has no known price"):
        MonitorSettings(instance_type="trn1.2xlarge")


def test_alert_definitions_are_valid_automations_for_the_pool_and_block() -> None:
    block = "11111111-2222-3333-4444-555555555555"
    autos = [AutomationCore.model_validate(d) for d in definitions("gpu-pool", block)]
    assert [a.trigger.expect for a in autos] == [  # type: ignore[union-attr]
        {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
        {"img2img.pool.starved"},
        {"img2img.worker.unhealthy"},
        {"img2img.slot.recycled"},
        {"img2img.pool.idle-launches"},
        {"img2img.dlq.not-empty"},
    ]
    assert all(str(a.actions[0].block_document_id) == block for a in autos)  # type: ignore[union-attr]
    assert autos[1].trigger.match.root["prefect.resource.name"] == "gpu-pool"  # type: ignore[union-attr]
    related = autos[0].trigger.match_related  # type: ignore[union-attr]
    assert related.root["prefect.resource.name"] == "img2img-pipeline"  # type: ignore[union-attr]


def test_top_reads_the_figures_from_a_scrape() -> None:
    text = "\n".join(
        [
            "# TYPE img2img_cost_per_image_usd gauge",
            'img2img_cost_per_image_usd{pool="inf2"} 0.0012',
            "# TYPE img2img_images counter",
            'img2img_images_total{outcome="completed",pool="inf2"} 7.0',
            "# TYPE img2img_failures counter",
            'img2img_failures_total{pool="inf2",stage="preprocess"} 1.0',
            "# TYPE img2img_stage_seconds histogram",
            'img2img_stage_seconds_sum{pool="inf2",stage="upscale"} 7.0',
            'img2img_stage_seconds_count{pool="inf2",stage="upscale"} 7.0',
        ]
    )
    got = parse(text + "\n")
    assert got.gauges["img2img_cost_per_image_usd"] == 0.0012
    assert got.images == {"completed": 7.0} and got.failures == {"preprocess": 1.0}
    assert got.stage_mean_s == {"upscale": 1.0}


def test_the_recycles_of_the_window_reach_metrics() -> None:
    from prometheus_client import generate_latest

    from deployments.services.metrics_endpoint import PrometheusMetrics

    window = FleetWindow(window_s=300, price_per_hour=PRICE, slots_per_host=1)
    window.add_hosts(T0, hosts=1, running_runs=1, queued_runs=0)
    window.slot_recycles = 4
    metrics = PrometheusMetrics("inf2")
    metrics.observe_fleet(window.sample(T0 + 60))
    text = generate_latest(metrics.registry).decode()
    assert 'img2img_slot_recycles{pool="inf2"} 4.0' in text
    assert parse(text).pool_gauges["inf2"]["img2img_slot_recycles"] == 4.0  # what top shows

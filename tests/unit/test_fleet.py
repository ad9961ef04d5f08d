from __future__ import annotations

import pytest
from prefect.events.schemas.automations import AutomationCore

from deployments.services.alerts import definitions
from img2img.config.monitor import MonitorSettings
from img2img.observe.scrape import parse
from img2img.scaling.fleet import OTHER, BatchDigest, FleetWindow, markdown

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


# -- lanes and tenants -------------------------------------------------------------------------


def _group(lane: str, tenant: str, images: int, device_ms: float, e2e_s: float) -> dict:
    return {
        "lane": lane,
        "tenant": tenant,
        "completed": images,
        "failed": 0,
        "e2e_ms": [e2e_s * 1000.0] * images,
        "device_ms": device_ms,
    }


def _laned_window(top: int) -> FleetWindow:
    window = FleetWindow(
        window_s=300,
        price_per_hour=PRICE,
        slots_per_host=1,
        top_tenants=top,
        lane_order=("interactive", "bulk"),
    )
    window.add_hosts(T0, hosts=2, running_runs=2, queued_runs=0)
    payload = {
        "completed": 13,
        "failed": 0,
        "groups": [
            _group("bulk", "acme", 8, 16_000.0, 40.0),
            _group("interactive", "acme", 1, 2_000.0, 1.0),
            _group("interactive", "zed", 3, 6_000.0, 2.0),
            _group("bulk", "tiny", 1, 16_000.0, 50.0),
        ],
    }
    window.add_batch(BatchDigest.from_payload(T0 + 30, payload))
    return window


def test_the_host_cost_is_attributed_to_lanes_and_tenants_by_device_time() -> None:
    sample = _laned_window(top=10).sample(T0 + 60)
    # 2 hosts × 60 s; device time 40 s in all.
    cost = 120 / 3600 * PRICE
    assert [s.name for s in sample.lanes] == ["interactive", "bulk"]  # by priority
    lanes = {s.name: s for s in sample.lanes}
    assert lanes["interactive"].images == 4 and lanes["bulk"].images == 9
    assert lanes["interactive"].device_s == pytest.approx(8.0)
    assert lanes["interactive"].cost_usd == pytest.approx(cost * 8 / 40)
    assert lanes["bulk"].cost_per_image_usd == pytest.approx(cost * 32 / 40 / 9)
    assert lanes["interactive"].e2e_p95_s == pytest.approx(2.0)
    tenants = {s.name: s for s in sample.tenants}
    assert [s.name for s in sample.tenants] == ["acme", "zed", "tiny"]  # busiest first
    assert tenants["tiny"].cost_usd == pytest.approx(cost * 16 / 40)  # one heavy image
    for shares in (sample.lanes, sample.tenants):
        assert sum(s.cost_usd for s in shares) == pytest.approx(sample.cost_usd)
    assert sample.as_dict()["tenants"][0]["name"] == "acme"


def test_tenants_beyond_the_top_are_one_group_and_off_means_no_shares() -> None:
    sample = _laned_window(top=1).sample(T0 + 60)
    assert [s.name for s in sample.tenants] == ["acme", OTHER]
    other = sample.tenants[1]
    assert other.images == 4 and other.device_s == pytest.approx(22.0)
    assert sum(s.cost_usd for s in sample.tenants) == pytest.approx(sample.cost_usd)
    plain = FleetWindow(window_s=300, price_per_hour=PRICE, slots_per_host=1)
    plain.add_hosts(T0, hosts=1, running_runs=1, queued_runs=0)
    plain.add_batch(BatchDigest(T0 + 30, completed=3, failed=0))
    assert plain.sample(T0 + 60).lanes == () and plain.sample(T0 + 60).tenants == ()
    text = markdown(sample, "inf2", "inf2.xlarge", None)
    assert "### By lane" in text and "### Busiest tenants" in text and f"| {OTHER} |" in text


def test_lanes_and_tenants_reach_metrics_and_top_with_bounded_labels() -> None:
    from prometheus_client import generate_latest
    from rich.console import Console

    from cli.top import render
    from deployments.services.metrics_endpoint import PrometheusMetrics

    window = _laned_window(top=10)
    metrics = PrometheusMetrics("inf2")
    for batch in window.batches:
        metrics.observe_batch(batch)
    metrics.observe_fleet(window.sample(T0 + 60))
    text = generate_latest(metrics.registry).decode()
    assert 'img2img_lane_images_total{lane="bulk",outcome="completed",pool="inf2"} 9.0' in text
    assert 'img2img_lane_device_time_seconds_total{lane="bulk",pool="inf2"} 32.0' in text
    assert 'img2img_lane_end_to_end_seconds_count{lane="interactive",pool="inf2"} 4.0' in text
    got = parse(text)
    assert set(got.lanes) == {"interactive", "bulk"}
    assert set(got.tenants) == {"acme", "zed", "tiny"}
    assert got.tenants["tiny"]["device_seconds"] == pytest.approx(16.0)
    # A tenant out of the top is removed from the scrape, not left at its last value.
    window.top_tenants = 1
    metrics.observe_fleet(window.sample(T0 + 61))
    got = parse(generate_latest(metrics.registry).decode())
    assert set(got.tenants) == {"acme", OTHER}
    console = Console(width=140, record=True)
    console.print(render(got, "http://127.0.0.1:1/metrics"))
    shown = console.export_text()
    assert "lanes (fleet window)" in shown and "busiest tenants" in shown
    assert "interactive" in shown and OTHER in shown


def test_a_scrape_adds_up_a_tenants_pools_and_skips_what_the_window_does_not_know() -> None:
    text = "\n".join(
        [
            "# TYPE img2img_tenant_device_seconds gauge",
            'img2img_tenant_device_seconds{pool="inf2-generate",tenant="acme"} 2.0',
            'img2img_tenant_device_seconds{pool="inf2-upscale",tenant="acme"} 3.0',
            "# TYPE img2img_tenant_images_per_minute gauge",
            'img2img_tenant_images_per_minute{pool="inf2-generate",tenant="acme"} 10.0',
            'img2img_tenant_images_per_minute{pool="inf2-upscale",tenant="acme"} 9.0',
            "# TYPE img2img_tenant_end_to_end_p95_seconds gauge",
            'img2img_tenant_end_to_end_p95_seconds{pool="inf2-upscale",tenant="acme"} NaN',
        ]
    )
    got = parse(text + "\n").tenants["acme"]
    # Each pool's device time and cost add up; a rate is the larger; NaN is not known.
    assert got == {"device_seconds": 5.0, "images_per_minute": 10.0}

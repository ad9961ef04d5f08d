"""The recycle rule (when a warm slot is replaced) and the soak's figures, pure."""

from __future__ import annotations

import random

import pytest

from img2img.config.worker import WorkerSettings
from img2img.slots.recycle import RecycleRule, recycle_reason, recycle_rule, run_limit
from infra.bench.soak import role_of, slot_role
from infra.bench.soak_figures import (
    Sample,
    over_goal,
    process_figures,
    role_figures,
    slope_per_hour,
)
from infra.local.env import stack_beside

MEMORY = RecycleRule(growth_mb=100.0, after_runs=None, jitter=0.0)


def test_memory_recycles_only_above_the_growth_over_the_ready_rss() -> None:
    assert recycle_reason(MEMORY, 600.0, 500.0, 0, None) is None  # exactly the bound: kept
    reason = recycle_reason(MEMORY, 600.5, 500.0, 0, None)
    assert reason is not None and "grew 100 MB" in reason and "500 → 600 MB" in reason
    assert "recycle_growth_mb 100" in reason


@pytest.mark.parametrize(("now", "ready"), [(None, 500.0), (9000.0, None), (None, None)])
def test_memory_is_not_judged_when_either_rss_is_unknown(
    now: float | None, ready: float | None
) -> None:
    assert recycle_reason(MEMORY, now, ready, 10_000, None) is None


def test_a_slot_that_shrank_is_kept() -> None:
    assert recycle_reason(MEMORY, 300.0, 500.0, 0, None) is None


def test_runs_recycle_at_the_slots_own_limit() -> None:
    rule = RecycleRule(growth_mb=None, after_runs=10, jitter=0.0)
    assert recycle_reason(rule, 9e9, 1.0, 11, None) is None  # no limit drawn: never for runs
    assert recycle_reason(rule, None, None, 11, 12) is None
    reason = recycle_reason(rule, None, None, 12, 12)
    assert reason is not None and "served 12 runs" in reason


def test_memory_is_named_before_runs_when_both_are_due() -> None:
    rule = RecycleRule(growth_mb=10.0, after_runs=1, jitter=0.0)
    reason = recycle_reason(rule, 100.0, 50.0, 5, 1)
    assert reason is not None and reason.startswith("its memory grew")


def test_the_run_limit_adds_at_most_the_jitter_share_and_differs_per_slot() -> None:
    rule = RecycleRule(growth_mb=None, after_runs=1000, jitter=0.1)
    rng = random.Random(3)
    limits = [run_limit(rule, rng) for _ in range(200)]
    assert all(limit is not None and 1000 <= limit <= 1100 for limit in limits)
    assert len(set(limits)) > 50  # slots started together are spread out
    assert run_limit(RecycleRule(None, 1000, 0.0), rng) == 1000
    assert run_limit(RecycleRule(100.0, None, 0.5), rng) is None


def test_zero_in_the_settings_turns_each_bound_off() -> None:
    rule = recycle_rule(WorkerSettings(recycle_growth_mb=0, recycle_after_runs=0))
    assert (rule.growth_mb, rule.after_runs) == (None, None)
    default = recycle_rule(WorkerSettings())
    assert (default.growth_mb, default.after_runs) == (2048.0, None)
    with pytest.raises(ValueError, match="recycle_jitter"):
        WorkerSettings(recycle_jitter=1.5)


# -- the soak's figures ------------------------------------------------------------------------


def test_the_slope_is_the_least_squares_fit_in_mb_per_hour() -> None:
    assert slope_per_hour([(0, 100), (1800, 110), (3600, 120)]) == pytest.approx(20.0)
    # noise around a flat line fits flat
    assert slope_per_hour([(0, 100), (60, 104), (120, 104), (180, 100)]) == pytest.approx(0.0)
    assert slope_per_hour([(5, 100)]) == 0.0
    assert slope_per_hour([(5, 100), (5, 300)]) == 0.0


def _line(pid: int, role: str, times: range, start: float, per_s: float) -> list[Sample]:
    return [Sample(at_s=t, pid=pid, role=role, rss_mb=start + per_s * t) for t in times]


def test_a_process_that_came_late_or_left_early_is_not_fitted() -> None:
    samples = (
        _line(1, "slot", range(0, 3601, 60), 500, 0.0)  # flat, the whole soak
        + _line(2, "slot", range(3000, 3601, 60), 400, 1.0)  # a host started late, warming
        + _line(3, "slot", range(0, 600, 60), 600, 0.0)  # recycled early
    )
    figures = process_figures(samples, warmup_s=180, end_s=3600)
    assert figures[1]["fitted"] and not figures[2]["fitted"] and not figures[3]["fitted"]
    (slot,) = role_figures(samples, warmup_s=180, end_s=3600)
    assert slot == {
        "role": "slot",
        "processes": 1,
        "transient": 2,
        "rss_mb_after_warmup": 500.0,
        "rss_mb_end": 500.0,
        "growth_mb_per_h": 0.0,
        "mean_growth_mb_per_h": 0.0,
    }


def test_each_role_reports_its_worst_process_and_the_warm_up_is_left_out() -> None:
    samples = (
        # fast growth in the warm-up only, then flat
        [Sample(at_s=t, pid=1, role="slot", rss_mb=300 + min(t, 180)) for t in range(0, 3601, 60)]
        + _line(2, "slot", range(0, 3601, 60), 500, 30 / 3600)  # 30 MB/h
        + _line(3, "worker", range(0, 3601, 60), 120, 0.0)
    )
    lines = {line["role"]: line for line in role_figures(samples, 180, 3600)}
    assert lines["slot"]["growth_mb_per_h"] == pytest.approx(30.0, abs=0.1)
    assert lines["slot"]["mean_growth_mb_per_h"] == pytest.approx(15.0, abs=0.1)
    assert lines["slot"]["rss_mb_after_warmup"] == pytest.approx(501.5, abs=0.1)
    assert lines["worker"]["growth_mb_per_h"] == 0.0
    assert over_goal(lines.values(), {"slot": 20.0, "worker": 10.0}) == [
        "slot grows 30.0 MB/hour (goal ≤ 20.0)"
    ]


def test_a_role_with_no_fitted_process_has_no_growth_and_meets_no_goal_by_accident() -> None:
    samples = _line(9, "dispatcher", range(3000, 3601, 60), 100, 1.0)
    (line,) = role_figures(samples, 180, 3600)
    assert line == {"role": "dispatcher", "processes": 0, "transient": 1}
    assert over_goal([line], {"dispatcher": 10.0}) == []


@pytest.mark.parametrize(
    ("service", "role"),
    [
        ("worker-0", "worker"),
        ("worker-12.draining", "worker"),
        ("upscale-worker-3", "upscale-worker"),
        ("dispatcher-1", "dispatcher"),
        ("prefect-server", "prefect-server"),
        ("moto", "moto"),
    ],
)
def test_a_service_role_comes_from_its_process_table_name(service: str, role: str) -> None:
    assert role_of(service) == role


def test_a_workers_slots_take_its_pools_name() -> None:
    assert slot_role("worker") == "slot"
    assert slot_role("upscale-worker") == "upscale-slot"


def test_recycle_figures_split_the_images_by_whether_they_finished_during_a_recycle() -> None:
    from infra.bench.soak_figures import recycle_figures

    images = [(float(t), 2.0, 0.5) for t in range(0, 100, 5)] + [(42.0, 9.0, 0.5)]
    figures = recycle_figures(images, [(40.0, 45.0)], settle_s=10)
    assert figures == {
        "recycles": 1,
        "recycle_s_max": 5.0,
        "images_during_recycles": 5,  # at 40, 42, 45, 50 and 55: from its start to 10 s after
        "e2e_p95_s_during_recycles": 9.0,
        "e2e_p95_s_otherwise": 2.0,
        "device_batch_s_p50": 0.5,
    }
    none = recycle_figures(images, [])
    assert none["recycles"] == 0 and none["images_during_recycles"] == 0
    assert none["e2e_p95_s_during_recycles"] is None


def test_a_benchmark_stack_sits_beside_the_demo_stack_on_every_port() -> None:
    from pathlib import Path

    from img2img.config.dev import LocalStackSettings

    demo = LocalStackSettings()
    soak = stack_beside(demo, Path("/tmp/soak"), 30, workers=2)
    assert (soak.prefect_port, soak.moto_port) == (demo.prefect_port + 30, demo.moto_port + 30)
    assert (soak.metrics_port, soak.postgres_port) == (
        demo.metrics_port + 30,
        demo.postgres_port + 30,
    )
    assert soak.state_dir == Path("/tmp/soak") and soak.workers == 2 and demo.workers == 0
    # The cluster's ports too: Redis, and each API replica (derived, or as set).
    assert soak.redis_port == demo.redis_port + 30
    assert soak.replica_ports == [p + 30 for p in demo.replica_ports]
    named = demo.model_copy(update={"api_ports": [9001, 9002]})
    assert stack_beside(named, Path("/tmp/soak"), 30).replica_ports == [9031, 9032]

from __future__ import annotations

import pytest

from infra.bench.capacity import Cost, Dispatch, RunCosts, batch_at, fit, fit_costs, plan_row


def test_a_cost_per_run_and_per_image_is_recovered_from_two_batch_sizes() -> None:
    # 160 ms a run and 1 ms an image, seen per image at batches 8 and 32.
    truth = Cost(per_run=0.16, per_image=0.001)
    cost = fit([(8, truth.per_image_at(8)), (32, truth.per_image_at(32)), (16, 0.5)])
    assert cost.per_run == pytest.approx(0.16) and cost.per_image == pytest.approx(0.001)
    # One batch size: all of it per run (the larger, safer plan).
    assert fit([(8, 0.02)]) == Cost(per_run=0.16, per_image=0.0)
    # Noise that would make a part negative is not believed.
    assert fit([(8, 0.02), (32, 0.03)]).per_run == 0.0
    assert fit([(8, 0.02), (32, 0.001)]) == Cost(per_run=0.032, per_image=0.0)
    with pytest.raises(ValueError, match="no benchmark steps"):
        fit([])


def test_the_costs_come_from_the_steps_that_kept_up() -> None:
    step = {
        "batch_size_p50": 8,
        "server_cpu_ms_per_image_above_idle": 20.0,
        "database_cpu_ms_per_image": 5.0,
        "db_bytes_per_image": 8000,
        "rows_per_image": 10.0,
    }
    late = {**step, "batch_size_p50": 64, "server_cpu_ms_per_image_above_idle": 900.0}
    costs = fit_costs([step, {**late, "stopped_because": "achieved 3 < 0.9 x offered"}])
    assert costs.server_s == Cost(per_run=0.16, per_image=0.0)
    with pytest.raises(ValueError, match="kept up"):
        fit_costs([{**step, "stopped_because": "p95 queue wait"}])


def test_the_batch_follows_the_dispatchers_rule_and_sets_the_plan() -> None:
    fast = Dispatch(image_s=0.01, dispatchers=2)
    assert batch_at(1.0, fast) == 8  # low load: the base batch
    assert batch_at(231.5, fast) == 232  # what arrives at each dispatcher in 2 s
    assert batch_at(5000.0, fast) == 512  # the ceiling
    inf2 = Dispatch(image_s=4.04, dispatchers=2)
    assert batch_at(231.5, inf2) == 8  # a run of 8 already takes 32 s on its slot
    costs = RunCosts(
        server_s=Cost(0.16, 0.001),
        database_s=Cost(0.04, 0.0001),
        bytes=Cost(50_000, 400),
        rows=Cost(70, 0.2),
    )
    row = plan_row(10e6, costs, fast)
    assert row["peak_images_per_s"] == 231.5 and row["batch"] == 232
    # 231.5/s × (0.16/232 + 0.001) s = 0.39 cores: one replica at 60%.
    assert row["server_cores"] == pytest.approx(0.39, abs=0.01) and row["api_replicas"] == 1
    slow = plan_row(10e6, costs, inf2)
    assert slow["flow_runs_per_s"] == pytest.approx(28.94, abs=0.01)
    assert slow["api_replicas"] == 9  # 4.86 cores at 60% each
    # 616 B per image at batch 232, all of it held 14 days when events are not told apart;
    # told apart (229 B of it events, held 7 days), less.
    assert row["bytes_per_image"] == 616 and row["database_gb"] == pytest.approx(86.2, abs=0.1)
    split = RunCosts(**{**costs.__dict__, "event_bytes": Cost(30_000, 100)})
    held = plan_row(10e6, split, fast, runs_days=14, events_days=7)
    assert held["event_bytes_per_image"] == 229
    assert held["database_gb"] == pytest.approx(70.1, abs=0.1)


def test_a_cluster_s_figures_size_the_replicas_and_the_services_apart() -> None:
    """From `bench control-plane --ha` lines: the API replicas from their own CPU, the
    background-services process from its own (past 60% of its core: shards), Redis beside
    them; the markdown grows the
    two columns. Lines of one server keep the plan as it was."""
    from infra.bench.capacity import markdown

    def step(batch: int, api: float, services: float) -> dict[str, object]:
        return {
            "batch_size_p50": batch,
            "server_cpu_ms_per_image_above_idle": api + services,
            "database_cpu_ms_per_image": 1.0,
            "db_bytes_per_image": 1000,
            "rows_per_image": 2.0,
            "cluster_cpu_ms_per_image_above_idle": {
                "api_replicas": api,
                "services": services,
                "redis": services / 4,
                "balancer": 1.0,
            },
        }

    # 120 ms a run on the replicas, 40 ms on the services process, 10 ms on Redis.
    costs = fit_costs([step(8, 15.0, 5.0), step(32, 3.75, 1.25)])
    assert costs.api_s == Cost(pytest.approx(0.12), pytest.approx(0.0))  # type: ignore[arg-type]
    assert costs.services_s is not None and costs.services_s.per_run == pytest.approx(0.04)
    inf2 = Dispatch(image_s=4.04, dispatchers=2)
    row = plan_row(10e6, costs, inf2)  # 28.9 runs a second
    assert row["api_cores"] == pytest.approx(3.47, abs=0.01) and row["api_replicas"] == 6
    assert row["services_cores"] == pytest.approx(1.16, abs=0.01)
    assert row["shards"] == 2 and row["redis_cores"] == pytest.approx(0.29, abs=0.01)
    assert plan_row(1e6, costs, inf2)["shards"] == 1  # 0.12 core: one server is enough
    table = markdown([row], "Inf2").splitlines()
    assert "services process (cores busy)" in table[0] and "shards" in table[0]
    assert table[0].count("|") == table[1].count("|") == table[2].count("|")
    assert "| 6 (3.47) | 1 (1.16) | 0.29 | 2 |" in table[2]
    one = plan_row(10e6, fit_costs([step(8, 15.0, 5.0)]), inf2)
    single = fit_costs([{k: v for k, v in step(8, 15.0, 5.0).items() if "cluster" not in k}])
    plain = plan_row(10e6, single, inf2)
    assert "shards" not in plain and plain["api_cores"] == plain["server_cores"]
    assert one["api_replicas"] <= plain["api_replicas"]
    assert markdown([plain], "Inf2").splitlines()[0].count("|") == 12

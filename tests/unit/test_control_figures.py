"""The control-plane bench's figures: requests from an access log, throughput while arrivals
go on, the stop rule, the bound it names, the Prefect Cloud ceiling."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from infra.bench.control_figures import (
    StepInput,
    cloud_ceiling,
    count_requests,
    name_bound,
    step_figures,
    stop_reason,
)

T0 = datetime(2026, 11, 30, tzinfo=UTC)
RUN = "0b7c2a52-3c1d-4c55-9a41-6a0d5d0f6a11"


def test_requests_are_counted_by_route_with_ids_folded() -> None:
    lines = [
        f'INFO:     127.0.0.1:5501 - "POST /api/flow_runs/{RUN}/set_state HTTP/1.1" 201 Created',
        f'INFO:     127.0.0.1:5502 - "POST /api/flow_runs/{RUN}/set_state HTTP/1.1" 200 OK',
        'INFO:     127.0.0.1:5503 - "GET /api/health?x=1 HTTP/1.1" 200 OK',
        "WARNING: something else entirely",
    ]
    assert count_requests(lines) == Counter(
        {"POST /api/flow_runs/{id}/set_state": 2, "GET /api/health": 1}
    )


def _step(ends_s: list[float], last_upload_s: float, **kw: object) -> StepInput:
    docs = [
        {
            "finished_at": (T0 + timedelta(seconds=s)).isoformat(),
            "timings_ms": {"queue_wait": 500.0, "total": 900.0},
        }
        for s in ends_s
    ]
    base: dict[str, object] = {
        "offered_per_s": 1.0,
        "uploaded": len(docs),
        "upload_s": last_upload_s,
        "docs": docs,
        "failed": 0,
        "missing": 0,
        "first_upload": T0,
        "last_upload": T0 + timedelta(seconds=last_upload_s),
        "window_s": 20.0,
        "cpu_s": {"prefect_server": 2.0, "workers": 1.0},
        "machine_busy_s": 10.0,
        "server_idle_cores": 0.05,
        "requests": Counter({"POST /api/flow_runs/": 4, "POST /api/logs/": 6}),
        "db_bytes": 10_000,
        "rows": {"flow_run": 2, "log": 10, "events": 10},
        "batch_size": 5,
    }
    return StepInput(**{**base, **kw})  # type: ignore[arg-type]


def test_a_pipeline_that_keeps_up_achieves_the_offered_rate() -> None:
    # One image a second for 10 s, each finished 3 s after its upload.
    figures = step_figures(_step([i + 3.0 for i in range(10)], 9.0, upload_s=9.0))
    assert figures["offered_images_per_s"] == 1.11  # 10 uploads in 9 s
    assert figures["achieved_images_per_s"] == 1.0
    assert stop_reason(figures, 30.0) is None


def test_a_pipeline_that_falls_behind_is_stopped() -> None:
    # Ten uploads in 9 s, finishing one every 2 s from the 3rd second: half the rate.
    figures = step_figures(_step([3.0 + 2 * i for i in range(10)], 9.0))
    assert figures["achieved_images_per_s"] == 0.5  # 3 more finished in the 6 s after the first
    assert "achieved 0.5 < 0.9 x offered" in str(stop_reason(figures, 30.0))


def test_missing_outcomes_and_long_waits_stop_the_bench() -> None:
    ends = [i + 3.0 for i in range(10)]
    assert "2 image(s) had no outcome" in str(
        stop_reason(step_figures(_step(ends, 9.0, missing=2)), 30.0)
    )
    assert "p95 queue wait 0.5 s > 0.1 s" in str(stop_reason(step_figures(_step(ends, 9.0)), 0.1))


def test_cost_per_image_and_per_batch() -> None:
    figures = step_figures(_step([i + 3.0 for i in range(10)], 9.0))
    assert figures["api_requests_per_image"] == 1.0
    assert figures["runs_endpoint_requests_per_image"] == 0.4
    assert figures["logs_events_per_image"] == 2.0
    assert figures["server_cpu_ms_per_image"] == 200.0
    assert figures["server_cpu_ms_per_image_above_idle"] == 100.0  # 0.05 core idle for 20 s
    assert figures["rows_per_batch"] == {"flow_run": 1.0, "log": 5.0, "events": 5.0}
    assert figures["db_bytes_per_image"] == 1000
    assert figures["cores_busy"] == {"prefect_server": 0.1, "workers": 0.05}


def test_a_cluster_s_server_cost_is_its_replicas_and_services_process() -> None:
    """Redis, the balancer and the database are the cluster's too, but not the server's
    CPU: they are reported apart, as each replica's requests are."""
    cpu = {
        "prefect_api_0": 1.0,
        "prefect_api_1": 0.6,
        "prefect_services": 0.4,
        "redis": 0.3,
        "balancer": 0.2,
        "database": 1.0,
        "workers": 1.0,
    }
    step = _step(
        [i + 3.0 for i in range(10)],
        9.0,
        cpu_s=cpu,
        requests_by_replica={"prefect-api-1": 4, "prefect-api-0": 6},
        idle_cores={"prefect_api_0": 0.01, "prefect_api_1": 0.01, "redis": 0.005},
    )
    figures = step_figures(step)
    assert figures["server_cpu_ms_per_image"] == 200.0
    # Above idle, part by part (20 s at 0.01 core is 0.2 s of each replica).
    assert figures["cluster_cpu_ms_per_image_above_idle"] == {
        "api_replicas": 120.0,
        "services": 40.0,
        "redis": 20.0,
        "balancer": 20.0,
    }
    assert figures["cpu_ms_per_image"]["redis"] == 30.0
    assert list(figures["api_requests_by_replica"].items()) == [
        ("prefect-api-0", 6),
        ("prefect-api-1", 4),
    ]
    one = step_figures(_step([3.0], 9.0))
    assert "api_requests_by_replica" not in one
    assert "cluster_cpu_ms_per_image_above_idle" not in one


def test_the_balancer_s_health_checks_are_counted_apart() -> None:
    from infra.bench.control_figures import without_health_checks

    requests = Counter({"GET /api/health": 120, "POST /api/flow_runs/filter": 60})
    clients, checks = without_health_checks(requests)
    assert (clients, checks) == (Counter({"POST /api/flow_runs/filter": 60}), 120)
    figures = step_figures(
        _step([3.0], 9.0, requests=clients, health_checks=checks, requests_by_replica={"a": 60})
    )
    assert figures["balancer_health_checks_per_min"] == 360.0  # over the 20 s window
    assert figures["api_requests_per_image"] == 60.0


def test_a_saturated_replica_or_redis_is_named_as_the_bound() -> None:
    replica = {
        "cores_busy": {"prefect_api_0": 0.5, "prefect_api_1": 0.9, "redis": 0.9},
        "machine_cores_busy": 1.0,
    }
    assert name_bound(replica, 4).startswith("prefect_api_1 (one process at 90%")
    redis = {"cores_busy": {"prefect_api_0": 0.5, "redis": 0.9}, "machine_cores_busy": 1.0}
    assert name_bound(redis, 4).startswith("redis (one process")
    # The balancer is threaded: at a core it is not the bound by itself.
    balancer = {"cores_busy": {"balancer": 0.95}, "machine_cores_busy": 1.0}
    assert name_bound(balancer, 4).startswith("not CPU")


def test_the_bound_named() -> None:
    server = {"cores_busy": {"prefect_server": 0.97, "workers": 0.5}, "machine_cores_busy": 1.5}
    assert name_bound(server, 2).startswith("prefect_server (one process at 97%")
    machine = {"cores_busy": {"prefect_server": 0.6, "workers": 0.9}, "machine_cores_busy": 1.9}
    assert name_bound(machine, 2).startswith("the machine's CPU (1.90 of 2 cores busy: workers")
    idle = {"cores_busy": {"prefect_server": 0.2}, "machine_cores_busy": 0.4}
    assert name_bound(idle, 2).startswith("not CPU")


def test_cloud_ceiling_is_the_tightest_bucket() -> None:
    # 5,000 requests/min at 10 per image: 8.33 images/s; 40,000 events/min at 20: 33.3.
    assert cloud_ceiling([(5000, 100), (40000, 200)], 10) == 8.33
    assert cloud_ceiling([(5000, 0)], 10) is None


def test_a_rate_the_uploads_cannot_reach_stops_the_bench() -> None:
    figures = step_figures(_step([i + 3.0 for i in range(10)], 9.0, offered_per_s=4.0))
    assert "the uploads reached 1.11 images/s of the 4.0 asked for" in str(
        stop_reason(figures, 30.0)
    )

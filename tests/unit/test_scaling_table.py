"""The tables and verdicts `img2img bench scaling` prints."""

from __future__ import annotations

from infra.bench import scaling_table as table


def test_a_row_lines_up_under_its_header_and_shows_a_missing_cold_start_as_nan() -> None:
    row = {
        "trace": "diurnal",
        "policy": "img2img",
        "setting": "0.75",
        "p50_wait_s": 1.234,
        "p95_wait_s": 12.0,
        "p99_wait_s": 30.55,
        "host_hours": 10.5,
        "host_hours_ratio": 1.25,
        "cost_usd": 20.0,
        "scale_events": 14,
        "idle_launches": 0,
        "max_hosts": 4,
        "cold_start_to_first_result_s": None,
    }
    line = table.row_line(row)
    assert len(line) == len(table.HEADER)
    assert line.split() == [
        "diurnal", "img2img", "0.75", "1.2", "12.0", "30.6", "10.50", "1.25", "20.00",
        "14", "0", "4", "nan",
    ]  # fmt: skip
    assert table.row_line({**row, "cold_start_to_first_result_s": 95.0}).endswith("95.0")


def test_the_verdict_names_the_peers_it_is_behind() -> None:
    assert table.verdict_line("spiky", {"keda": True, "ray": True}) == (
        "spiky: img2img ahead of 2 of 2 (all)"
    )
    assert table.verdict_line("spiky", {"keda": True, "ray": False, "sagemaker": False}) == (
        "spiky: img2img ahead of 1 of 3 (behind: ray, sagemaker)"
    )


def test_a_split_line_gives_both_pools_and_the_setting() -> None:
    out = {
        "single_host_hours": 8.0,
        "single_p95_wait_s": 20.0,
        "split_over_single": 0.95,
        "split_default_over_single": 1.1,
        "split": {
            "pools": [{"host_hours": 5.0}, {"host_hours": 2.6}],
            "split_host_hours": 7.6,
            "split_p95_wait_s": 22.5,
            "settings": {"target_utilization": 0.8, "drain_target_s": 120.0},
        },
    }
    line = table.split_line("steady", out)
    assert line.split()[:9] == [
        "steady", "8.00", "20.0", "5.00", "2.60", "7.60", "22.5", "0.950", "1.100",
    ]  # fmt: skip
    assert line.endswith("target 0.8, drain 120 s")

"""The tables and verdicts `img2img bench scaling` prints (pure: rows in, text out)."""

from __future__ import annotations

from typing import Any

HEADER = (
    f"{'trace':<10}{'policy':<11}{'setting':<9}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}"
    f"{'host-h':>9}{'ratio':>7}{'cost $':>9}{'events':>8}{'idle':>6}{'max':>6}{'cold s':>8}"
)

SPLIT_HEADER = (
    f"{'trace':<10}{'single h':>10}{'p95 s':>8}{'generate h':>10}{'upscale h':>10}"
    f"{'split h':>9}{'p95 s':>8}{'ratio':>7}{'default':>9}  split setting"
)


def row_line(row: dict[str, Any]) -> str:
    """One policy on one trace, under `HEADER`."""
    cold = row["cold_start_to_first_result_s"]
    return (
        f"{row['trace']:<10}{row['policy']:<11}{row['setting']:<9}"
        f"{row['p50_wait_s']:>8.1f}{row['p95_wait_s']:>8.1f}{row['p99_wait_s']:>8.1f}"
        f"{row['host_hours']:>9.2f}{row['host_hours_ratio']:>7.2f}"
        f"{row['cost_usd']:>9.2f}{row['scale_events']:>8}{row['idle_launches']:>6}"
        f"{row['max_hosts']:>6}{cold if cold is not None else float('nan'):>8.1f}"
    )


def verdict_line(trace: str, verdict: dict[str, bool]) -> str:
    """Which peers this project's policy is ahead of on `trace` (`scaling_compare.ahead`)."""
    behind = [name for name, ahead in verdict.items() if not ahead]
    return (
        f"{trace}: img2img ahead of {sum(verdict.values())} of {len(verdict)} "
        f"({'behind: ' + ', '.join(behind) if behind else 'all'})"
    )


def split_line(trace: str, out: dict[str, Any]) -> str:
    """The single pool against a pool per stage on `trace`, under `SPLIT_HEADER`."""
    best = out["split"]
    first, second = best["pools"]
    setting = best["settings"]
    return (
        f"{trace:<10}{out['single_host_hours']:>10.2f}{out['single_p95_wait_s']:>8.1f}"
        f"{first['host_hours']:>10.2f}{second['host_hours']:>10.2f}"
        f"{best['split_host_hours']:>9.2f}{best['split_p95_wait_s']:>8.1f}"
        f"{out['split_over_single']:>7.3f}{out['split_default_over_single']:>9.3f}  "
        f"target {setting['target_utilization']}, drain {setting['drain_target_s']:.0f} s"
    )


LANES_HEADER = (
    f"{'trace':<10}{'setting':<10}{'inter p95 s':>12}{'in bulk p95':>12}{'in bulk max':>12}"
    f"{'bulk p50 s':>11}"
    f"{'bulk p95 s':>11}{'host-h':>9}{'cost $':>9}{'max':>6}{'cap':>6}"
)


def lanes_line(row: dict[str, Any]) -> str:
    """One way of serving a two-lane trace, under `LANES_HEADER`."""
    cap = row["lower_lanes_max_hosts"]
    return (
        f"{row['trace']:<10}{row['setting']:<10}{row['interactive_p95_wait_s']:>12.1f}"
        f"{row['interactive_p95_wait_during_bulk_s']:>12.1f}"
        f"{row['interactive_max_wait_during_bulk_s']:>12.1f}{row['bulk_p50_wait_s']:>11.1f}"
        f"{row['bulk_p95_wait_s']:>11.1f}{row['host_hours']:>9.2f}{row['cost_usd']:>9.2f}"
        f"{row['max_hosts']:>6}{cap if cap is not None else '-':>6}"
    )

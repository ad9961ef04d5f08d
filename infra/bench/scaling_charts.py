"""One chart per trace: arrivals, hosts and queue wait over time, one line per policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.bench.scaling_sim import SimResult, Trace

COLOURS = {
    "img2img": "#1f77b4",
    "img2img forecast": "#17becf",
    "keda": "#ff7f0e",
    "sagemaker": "#2ca02c",
    "ray": "#d62728",
}


def trace_chart(trace: Trace, results: dict[str, SimResult], out_dir: Path) -> Path:
    """Write `<out_dir>/scaling-<trace>.png` from the results' timelines (sampled runs)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    hours = trace.duration_s > 4 * 3600
    scale, unit = (3600.0, "hours") if hours else (60.0, "minutes")
    fig, (ax_rate, ax_hosts, ax_wait) = plt.subplots(
        3, 1, figsize=(9, 7.5), sharex=True, height_ratios=(1, 1.3, 1.3)
    )
    first = next(iter(results.values()))
    ax_rate.fill_between(
        [t / scale for t, *_ in first.timeline],
        [rate for _, rate, _, _ in first.timeline],
        color="#bbbbbb",
        step="pre",
    )
    ax_rate.set_ylabel("arrivals / s")
    ax_rate.set_title(f"{trace.name}: {trace.description}", fontsize=11)
    for label, result in results.items():
        x = [t / scale for t, *_ in result.timeline]
        hosts = [h for _, _, h, _ in result.timeline]
        waits = [w for _, _, _, w in result.timeline]
        hours_used = result.host_seconds / 3600.0
        colour = COLOURS.get(label)
        ax_hosts.step(x, hosts, where="pre", color=colour, label=f"{label} ({hours_used:.1f} h)")
        ax_wait.step(x, waits, where="pre", color=colour, label=label)
    ax_hosts.set_yscale("symlog", linthresh=10)
    ax_hosts.set_ylabel("hosts (paid, log above 10)")
    ax_hosts.legend(loc="upper right", fontsize=8, title="policy (host-hours)", title_fontsize=8)
    ax_wait.set_ylabel("p95 queue wait, s")
    ax_wait.set_xlabel(unit)
    for ax in (ax_rate, ax_hosts, ax_wait):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    path = out_dir / f"scaling-{trace.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

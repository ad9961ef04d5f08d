"""One chart per trace: arrivals, hosts and queue wait over time, one line per policy; and
the markdown artifact that shows the bench's table and charts in the Prefect UI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.bench.scaling_sim import SimResult, Trace

COLOURS = {
    "img2img": "#1f77b4",
    "img2img forecast": "#17becf",
    "keda": "#ff7f0e",
    "sagemaker": "#2ca02c",
    "ray": "#d62728",
}
ARTIFACT_KEY = "img2img-scaling-bench"


def trace_png(trace: Trace, results: dict[str, SimResult], dpi: int = 110) -> bytes:
    """The chart of `results`' timelines (sampled runs) as a PNG."""
    # A Figure of its own, no pyplot: no global state, no display.
    from matplotlib.figure import Figure

    from img2img.observe.charts import png_bytes

    hours = trace.duration_s > 4 * 3600
    scale, unit = (3600.0, "hours") if hours else (60.0, "minutes")
    fig = Figure(figsize=(9, 7.5), dpi=dpi, layout="tight")
    ax_rate, ax_hosts, ax_wait = fig.subplots(3, 1, sharex=True, height_ratios=(1, 1.3, 1.3))
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
        style = "--" if label.endswith("forecast") else "-"
        ax_hosts.step(
            x,
            hosts,
            where="pre",
            color=colour,
            linestyle=style,
            label=f"{label} ({hours_used:.1f} h)",
        )
        ax_wait.step(x, waits, where="pre", color=colour, linestyle=style, label=label)
    ax_hosts.set_yscale("symlog", linthresh=10)
    ax_hosts.set_ylabel("hosts (paid, log above 10)")
    ax_hosts.legend(loc="upper right", fontsize=8, title="policy (host-hours)", title_fontsize=8)
    ax_wait.set_ylabel("p95 queue wait, s")
    ax_wait.set_xlabel(unit)
    for ax in (ax_rate, ax_hosts, ax_wait):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    return png_bytes(fig)


def trace_chart(trace: Trace, results: dict[str, SimResult], out_dir: Path) -> Path:
    """Write `<out_dir>/scaling-<trace>.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"scaling-{trace.name}.png"
    path.write_bytes(trace_png(trace, results))
    return path


def bench_markdown(rows: list[dict[str, Any]], charts: dict[str, bytes], header: str) -> str:
    """The bench's rows as one table per trace, each followed by its chart (a `data:` URI,
    as the run charts are: the artifact needs no bucket and no URL that expires)."""
    from img2img.observe.charts import data_uri

    out = ["# Scaling bench", "", header, ""]
    for trace in dict.fromkeys(r["trace"] for r in rows):
        out += [
            f"## {trace}",
            "",
            "| policy | setting | wait p50 / p95 / p99 s | host-hours | ratio "
            "| idle launches | max hosts | cold start → first result s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in (r for r in rows if r["trace"] == trace):
            cold = r["cold_start_to_first_result_s"]
            out.append(
                f"| {r['policy']} | {r['setting']} | {r['p50_wait_s']:.0f} / "
                f"{r['p95_wait_s']:.0f} / {r['p99_wait_s']:.0f} | {r['host_hours']:.2f} | "
                f"{r['host_hours_ratio']:.2f} | {r['idle_launches']} | {r['max_hosts']} | "
                f"{'hosts up before' if cold is None else f'{cold:.1f}'} |"
            )
        if trace in charts:
            out += ["", f"![{trace}]({data_uri(charts[trace])})"]
        out.append("")
    return "\n".join(out)


def publish(client: Any, markdown: str, description: str) -> Any:
    """Create the bench's markdown artifact (a new version under its key each run)."""
    from prefect.client.schemas.actions import ArtifactCreate

    return client.create_artifact(
        ArtifactCreate(key=ARTIFACT_KEY, type="markdown", data=markdown, description=description)
    )

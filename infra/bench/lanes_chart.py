"""The chart of `img2img bench lanes`: the bulk burst with the interactive uploads beside
it, and two tenants' bursts into one lane (pure drawing: rows in, PNG out)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.bench.lanes import Done


def _cumulative(rows: list[Done], origin: float) -> tuple[list[float], list[int]]:
    times = sorted(r.finished - origin for r in rows)
    return times, list(range(1, len(times) + 1))


def lanes_png(
    bulk: list[Done],
    interactive: list[Done],
    burst_at: float,
    first: list[Done],
    second: list[Done],
    lanes: bool,
    dpi: int = 110,
) -> bytes:
    """Left: tenant A's bulk completions over time and each of tenant B's interactive
    uploads (its upload → result time, when it was uploaded). Right: tenants C's and D's
    completions over time from C's first upload, D's first upload marked."""
    from matplotlib.figure import Figure

    from img2img.observe.charts import png_bytes

    fig = Figure(figsize=(11, 4.6), dpi=dpi, layout="tight")
    left, right = fig.subplots(1, 2)
    t, n = _cumulative(bulk, burst_at)
    left.plot(t, n, color="#7f7f7f", label="tenant A, bulk: completed")
    left.set_xlabel("seconds since A's burst was uploaded")
    left.set_ylabel("A's images completed")
    waits = left.twinx()
    waits.scatter(
        [r.put_at - burst_at for r in interactive],
        [r.total_ms / 1000.0 for r in interactive],
        color="#1f77b4",
        s=14,
        label="tenant B, interactive: upload → result",
    )
    waits.set_ylabel("B's upload → result, s", color="#1f77b4")
    waits.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()
    more = waits.get_legend_handles_labels()
    left.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
    left.set_title(f"a bulk burst and lone interactive uploads (lanes {'on' if lanes else 'off'})")

    origin = min((r.put_at for r in first), default=0.0)
    for rows, name, colour in ((first, "C", "#2ca02c"), (second, "D", "#d62728")):
        t, n = _cumulative(rows, origin)
        right.plot(t, n, color=colour, label=f"tenant {name}: completed")
    if second:
        right.axvline(
            min(r.put_at for r in second) - origin, color="#d62728", linestyle=":", linewidth=1
        )
    right.set_xlabel("seconds since C's first upload (dotted: D's first)")
    right.set_ylabel("images completed")
    right.legend(loc="upper left", fontsize=8)
    right.set_title("two tenants' bursts into the bulk lane")
    return png_bytes(fig)

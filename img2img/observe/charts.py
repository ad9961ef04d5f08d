"""The pictures in the Prefect UI: a run's waterfall and the fleet's time series (matplotlib).

Each chart is a small PNG embedded in a markdown artifact as a `data:` URI, so it shows for
as long as Prefect keeps the artifact, on the local stack and on AWS alike: no bucket, no
presigned URL to expire, no access for the browser to arrange. The price is the PNG's size
in the Prefect database (about 20–40 KB a chart; `monitor.run_chart` turns the per-run
chart off).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from img2img.observe.waterfall import ORDER, QUEUE_WAIT, WAIT_DEVICE, WAIT_OTHER, ImageLine

if TYPE_CHECKING:
    from img2img.scaling.fleet import FleetSample

MAX_ROWS = 40  # images drawn in one waterfall; the rest are counted in its title

_COLOURS = {
    QUEUE_WAIT: "#b8b8b8",
    "outcome check": "#8c6d31",
    "copy": "#bd9e39",
    "download": "#e7ba52",
    "preprocess": "#e7cb94",
    "stage 1: generate": "#3182bd",
    "stage 2: upscale": "#08519c",
    "encode": "#74c476",
    "upload": "#31a354",
    WAIT_DEVICE: "#e6550d",
    WAIT_OTHER: "#fdae6b",
}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float, height: float) -> Any:
    # The object-oriented API on a Figure of its own: no pyplot, no global state, safe in
    # threads and in long-running services.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=80, layout="constrained")


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def waterfall_png(lines: Sequence[ImageLine], title: str) -> bytes:
    """Stacked horizontal bars, one per image: every segment of its time, in order."""
    shown = list(lines[:MAX_ROWS])
    fig = _figure(9.0, 1.6 + 0.28 * max(len(shown), 1))
    ax = fig.subplots()
    used: dict[str, Any] = {}
    for row, line in enumerate(shown):
        for seg in line.segments:
            bar = ax.barh(
                row,
                seg.seconds,
                left=seg.start_s,
                color=_COLOURS.get(seg.label, "#9e9ac8"),
                height=0.7,
                label=seg.label,
            )
            used.setdefault(seg.label, bar)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([_short(line.image) + ("*" if line.note else "") for line in shown])
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the upload event (* from the run's start)")
    more = f" (first {len(shown)} of {len(lines)})" if len(lines) > len(shown) else ""
    ax.set_title(title + more, loc="left", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    order = [k for k in ORDER if k in used] + [k for k in used if k not in ORDER]
    fig.legend(
        [used[k] for k in order],
        order,
        loc="outside lower center",
        ncols=min(len(order), 4),
        fontsize=8,
        frameon=False,
    )
    return png_bytes(fig)


def fleet_png(samples: Sequence[FleetSample], title: str) -> bytes:
    """Four panels over time: throughput, end-to-end latency, queue and hosts, cost."""
    fig = _figure(9.0, 6.0)
    axes = fig.subplots(2, 2, sharex=True)
    times = [s.at for s in samples]
    ax = axes[0][0]
    ax.plot(times, [s.images_per_min for s in samples], color="#3182bd")
    ax.set_title("images per minute", loc="left", fontsize=9)
    ax = axes[0][1]
    ax.plot(times, [s.e2e_p50_s for s in samples], color="#31a354", label="p50")
    ax.plot(times, [s.e2e_p95_s for s in samples], color="#e6550d", label="p95")
    ax.set_title("upload → result, seconds", loc="left", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax = axes[1][0]
    ax.step(times, [s.hosts for s in samples], where="post", label="hosts", color="#08519c")
    ax.step(
        times, [s.queued_runs for s in samples], where="post", label="queued runs", color="#e6550d"
    )
    ax.set_ylim(bottom=0)
    duty = ax.twinx()
    duty.plot(
        times,
        [100 * s.duty_cycle for s in samples],
        color="#31a354",
        linestyle="--",
        label="duty cycle, % (right)",
    )
    duty.set_ylim(0, 100)
    duty.tick_params(labelsize=7)
    ax.set_title("hosts, queued runs; duty cycle", loc="left", fontsize=9)
    lines = ax.get_lines() + duty.get_lines()
    labels = [str(line.get_label()) for line in lines]
    ax.legend(lines, labels, fontsize=7, frameon=False, loc="upper left")
    ax = axes[1][1]
    ax.plot(times, [s.cost_per_image_usd for s in samples], color="#756bb1")
    ax.set_title("cost per image, USD", loc="left", fontsize=9)
    from matplotlib.dates import DateFormatter

    for row in axes:
        for a in row:
            a.grid(alpha=0.3)
            a.tick_params(labelsize=7)
            a.xaxis.set_major_formatter(DateFormatter("%H:%M"))
    axes[1][1].set_ylim(bottom=0)
    fig.autofmt_xdate()
    fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    return png_bytes(fig)


def _short(key: str, width: int = 28) -> str:
    name = key.rsplit("/", 1)[-1]
    return name if len(name) <= width else "…" + name[-(width - 1) :]

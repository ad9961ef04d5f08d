"""The fleet's figures as the Prometheus endpoint states them (pure parsing, no I/O): what
`img2img top` shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

GAUGES = {
    "img2img_images_per_minute": "images/min",
    "img2img_end_to_end_p95_seconds": "upload → result p95, s",
    "img2img_queued_runs": "queued runs",
    "img2img_queued_messages": "queued upload events",
    "img2img_running_runs": "running runs",
    "img2img_hosts_wanted": "hosts wanted",
    "img2img_hosts_online": "hosts online",
    "img2img_duty_cycle": "duty cycle",
    "img2img_cost_per_image_usd": "cost per image, USD",
    "img2img_dead_letter_messages": "dead-letter messages",
    "img2img_slot_recycles": "slot recycles (lately)",
}


# A lane's or a tenant's window gauges: name suffix → how pools combine (a split topology's
# two pools each report their part: costs and device time add up, a rate or a p95 is the
# larger).
def _largest(values: list[float]) -> float:
    return max(values)


def _total(values: list[float]) -> float:
    return float(sum(values))


SHARE_FIGURES: dict[str, Callable[[list[float]], float]] = {
    "images_per_minute": _largest,
    "end_to_end_p95_seconds": _largest,
    "device_seconds": _total,
    "cost_usd": _total,
    "cost_per_image_usd": _total,
}


@dataclass
class Scraped:
    gauges: dict[str, float] = field(default_factory=dict)  # of the first pool listed
    pool_gauges: dict[str, dict[str, float]] = field(default_factory=dict)  # pool → gauges
    images: dict[str, float] = field(default_factory=dict)  # outcome → count, every pool
    failures: dict[str, float] = field(default_factory=dict)  # stage → count
    stage_mean_s: dict[str, float] = field(default_factory=dict)  # stage → mean seconds
    # With lanes or tenants: lane → figure → value, and the shown tenants' the same.
    lanes: dict[str, dict[str, float]] = field(default_factory=dict)
    tenants: dict[str, dict[str, float]] = field(default_factory=dict)


def parse(text: str) -> Scraped:
    """The figures of one scrape of /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out = Scraped()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    parts: dict[tuple[str, str, str], list[float]] = {}  # (by, name, figure) → per pool
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            share = _share_figure(s.name)
            if share is not None:
                by, figure = share
                if by in s.labels and s.value == s.value:  # NaN: not known in the window
                    parts.setdefault((by, s.labels[by], figure), []).append(s.value)
            elif s.name in GAUGES:
                pool = s.labels.get("pool", "")
                out.pool_gauges.setdefault(pool, {})[s.name] = s.value
            elif s.name == "img2img_images_total":
                outcome = s.labels["outcome"]
                out.images[outcome] = out.images.get(outcome, 0.0) + s.value
            elif s.name == "img2img_failures_total":
                stage = s.labels["stage"]
                out.failures[stage] = out.failures.get(stage, 0.0) + s.value
            elif s.name == "img2img_stage_seconds_sum":
                sums[s.labels["stage"]] = sums.get(s.labels["stage"], 0.0) + s.value
            elif s.name == "img2img_stage_seconds_count":
                counts[s.labels["stage"]] = counts.get(s.labels["stage"], 0.0) + s.value
    if out.pool_gauges:
        out.gauges = dict(next(iter(out.pool_gauges.values())))
    out.stage_mean_s = {k: sums[k] / counts[k] for k in sums if counts.get(k)}
    for (by, name, figure), values in parts.items():
        table = out.lanes if by == "lane" else out.tenants
        table.setdefault(name, {})[figure] = SHARE_FIGURES[figure](values)
    return out


def _share_figure(metric: str) -> tuple[str, str] | None:
    """("lane" or "tenant", figure) for a lane's or tenant's window gauge, else None."""
    for by in ("lane", "tenant"):
        prefix = f"img2img_{by}_"
        if metric.startswith(prefix) and metric[len(prefix) :] in SHARE_FIGURES:
            return by, metric[len(prefix) :]
    return None

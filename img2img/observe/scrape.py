"""The fleet's figures as the Prometheus endpoint states them (pure parsing, no I/O): what
`img2img top` shows."""

from __future__ import annotations

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


@dataclass
class Scraped:
    gauges: dict[str, float] = field(default_factory=dict)  # of the first pool listed
    pool_gauges: dict[str, dict[str, float]] = field(default_factory=dict)  # pool → gauges
    images: dict[str, float] = field(default_factory=dict)  # outcome → count, every pool
    failures: dict[str, float] = field(default_factory=dict)  # stage → count
    stage_mean_s: dict[str, float] = field(default_factory=dict)  # stage → mean seconds


def parse(text: str) -> Scraped:
    """The figures of one scrape of /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out = Scraped()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in GAUGES:
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
    return out

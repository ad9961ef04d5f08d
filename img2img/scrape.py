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
}


@dataclass
class Scraped:
    gauges: dict[str, float] = field(default_factory=dict)
    images: dict[str, float] = field(default_factory=dict)  # outcome → count
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
                out.gauges[s.name] = s.value
            elif s.name == "img2img_images_total":
                out.images[s.labels["outcome"]] = s.value
            elif s.name == "img2img_failures_total":
                out.failures[s.labels["stage"]] = s.value
            elif s.name == "img2img_stage_seconds_sum":
                sums[s.labels["stage"]] = s.value
            elif s.name == "img2img_stage_seconds_count":
                counts[s.labels["stage"]] = s.value
    out.stage_mean_s = {k: sums[k] / counts[k] for k in sums if counts.get(k)}
    return out

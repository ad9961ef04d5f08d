"""The Prometheus endpoint on the control host: `/metrics`, served by the autoscaler.

Gauges follow the pool at each tick (queue, runs, hosts); counters and histograms follow
the finished batches as the fleet view reads them (so they lag by up to one refresh);
the fleet gauges (throughput, cost per image) follow each refresh. Its own registry, so a
scrape shows these figures and not the process's internals.

With lanes or tenants, the same by `lane` (counters and histograms: the lanes are few and
fixed) and by `tenant` (window gauges only, for the busiest `tenants.top` and one
`(other)`: a tenant leaving the top is removed, so the labels stay bounded).
"""

from __future__ import annotations

from typing import Any

from img2img.scaling.fleet import BatchDigest, FleetSample, Share
from img2img.scaling.policy import Decision, Observation

# Seconds, from a fast stage on the device to a long queue wait.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


GAUGES = {
    "queued_runs": ("img2img_queued_runs", "Flow runs waiting for a slot"),
    "running_runs": ("img2img_running_runs", "Flow runs running"),
    "hosts_wanted": ("img2img_hosts_wanted", "Hosts the autoscaler holds"),
    "hosts_running": ("img2img_hosts_online", "Hosts with a worker online"),
    "queued_messages": ("img2img_queued_messages", "Upload events waiting in the ingest queue"),
    "dead_letters": ("img2img_dead_letter_messages", "Messages in the DLQ"),
    "images_per_minute": ("img2img_images_per_minute", "Throughput, fleet window"),
    "duty_cycle": ("img2img_duty_cycle", "Busy slots ÷ slots held, fleet window"),
    "cost_per_image": (
        "img2img_cost_per_image_usd",
        "Host cost ÷ images with an outcome, fleet window",
    ),
    "e2e_p95": ("img2img_end_to_end_p95_seconds", "Upload → result p95, window"),
    "slot_recycles": (
        "img2img_slot_recycles",
        "Slots recycled (memory or run bound) in the scaling policy's idle-launch window",
    ),
}


# The window's figures of a lane or a tenant (`fleet.Share`): attribute → (suffix, help).
SHARE_GAUGES = {
    "images_per_min": ("images_per_minute", "Throughput, fleet window"),
    "e2e_p95_s": ("end_to_end_p95_seconds", "Upload → result p95, fleet window"),
    "device_s": ("device_seconds", "Device time of its images, fleet window"),
    "cost_usd": ("cost_usd", "Host cost attributed by device time, fleet window"),
    "cost_per_image_usd": ("cost_per_image_usd", "Attributed host cost ÷ its images, window"),
}


class PrometheusMetrics:
    """One pool's figures; `for_pool` gives another pool's, in the same registry, so one
    endpoint serves every pool of a split topology (told apart by the `pool` label)."""

    def __init__(self, pool: str, shared: PrometheusMetrics | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.pool = pool
        self._server: Any = None
        self.registry: CollectorRegistry
        self._families: dict[str, Any]
        if shared is not None:
            self.registry, self._families = shared.registry, shared._families
        else:
            self.registry = CollectorRegistry(auto_describe=True)
            r = self.registry
            self._families = {
                key: Gauge(name, doc, ["pool"], registry=r) for key, (name, doc) in GAUGES.items()
            }
            self._families["images"] = Counter(
                "img2img_images", "Images with an outcome", ["pool", "outcome"], registry=r
            )
            self._families["failures"] = Counter(
                "img2img_failures",
                "Failed images by the stage they failed at",
                ["pool", "stage"],
                registry=r,
            )
            self._families["stage"] = Histogram(
                "img2img_stage_seconds",
                "Per-image time in each stage (completed images)",
                ["pool", "stage"],
                buckets=BUCKETS,
                registry=r,
            )
            self._families["e2e"] = Histogram(
                "img2img_end_to_end_seconds",
                "Upload event → outcome per image",
                ["pool"],
                buckets=BUCKETS,
                registry=r,
            )
            self._families["lane_images"] = Counter(
                "img2img_lane_images",
                "Images with an outcome, by lane",
                ["pool", "lane", "outcome"],
                registry=r,
            )
            self._families["lane_e2e"] = Histogram(
                "img2img_lane_end_to_end_seconds",
                "Upload event → outcome per image, by lane",
                ["pool", "lane"],
                buckets=BUCKETS,
                registry=r,
            )
            self._families["lane_device"] = Counter(
                "img2img_lane_device_time_seconds",
                "Device time of the lane's images",
                ["pool", "lane"],
                registry=r,
            )
            for by in ("lane", "tenant"):
                for key, (suffix, doc) in SHARE_GAUGES.items():
                    self._families[f"{by}_{key}"] = Gauge(
                        f"img2img_{by}_{suffix}", f"{doc}, by {by}", ["pool", by], registry=r
                    )
        f = self._families
        self.queued_runs = f["queued_runs"].labels(pool)
        self.running_runs = f["running_runs"].labels(pool)
        self.hosts_wanted = f["hosts_wanted"].labels(pool)
        self.hosts_running = f["hosts_running"].labels(pool)
        self.queued_messages = f["queued_messages"].labels(pool)
        self.dead_letters = f["dead_letters"].labels(pool)
        self.images_per_minute = f["images_per_minute"].labels(pool)
        self.duty_cycle = f["duty_cycle"].labels(pool)
        self.cost_per_image = f["cost_per_image"].labels(pool)
        self.e2e_p95 = f["e2e_p95"].labels(pool)
        self.slot_recycles = f["slot_recycles"].labels(pool)
        self._images, self._failures = f["images"], f["failures"]
        self._stage, self._e2e = f["stage"], f["e2e"]
        self._shown: dict[str, set[str]] = {"lane": set(), "tenant": set()}

    def for_pool(self, pool: str) -> PrometheusMetrics:
        """`pool`'s figures, served by this one's endpoint."""
        return PrometheusMetrics(pool, shared=self)

    def serve(self, host: str, port: int) -> int:
        """Start serving /metrics in a thread; returns the port (0 picks a free one)."""
        from prometheus_client import start_http_server

        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def observe_pool(self, obs: Observation, decision: Decision) -> None:
        self.queued_runs.set(obs.queued)
        self.running_runs.set(obs.running)
        self.hosts_wanted.set(decision.desired)

    def observe_batch(self, batch: BatchDigest) -> None:
        self._images.labels(self.pool, "completed").inc(batch.completed)
        self._images.labels(self.pool, "failed").inc(batch.failed)
        if batch.handed_off:
            self._images.labels(self.pool, "handed_off").inc(batch.handed_off)
        for stage, count in batch.failed_at.items():
            self._failures.labels(self.pool, stage).inc(count)
        for stage, values in batch.stage_ms.items():
            hist = self._stage.labels(self.pool, stage)
            for ms in values:
                hist.observe(ms / 1000.0)
        e2e = self._e2e.labels(self.pool)
        for ms in batch.e2e_ms:
            e2e.observe(ms / 1000.0)
        f = self._families
        for group in batch.groups:
            if group.lane is None:
                continue
            for outcome in ("completed", "failed", "handed_off"):
                count = getattr(group, outcome)
                if count:
                    f["lane_images"].labels(self.pool, group.lane, outcome).inc(count)
            lane_e2e = f["lane_e2e"].labels(self.pool, group.lane)
            for ms in group.e2e_ms:
                lane_e2e.observe(ms / 1000.0)
            f["lane_device"].labels(self.pool, group.lane).inc(group.device_ms / 1000.0)

    def observe_fleet(self, sample: FleetSample) -> None:
        self.images_per_minute.set(sample.images_per_min)
        self.duty_cycle.set(sample.duty_cycle)
        self.slot_recycles.set(sample.slot_recycles)
        if sample.cost_per_image_usd is not None:
            self.cost_per_image.set(sample.cost_per_image_usd)
        if sample.e2e_p95_s is not None:
            self.e2e_p95.set(sample.e2e_p95_s)
        if sample.hosts_online is not None:
            self.hosts_running.set(sample.hosts_online)
        if sample.queued_messages is not None:
            self.queued_messages.set(sample.queued_messages)
        if sample.dead_letters is not None:
            self.dead_letters.set(sample.dead_letters)
        self._observe_shares("lane", sample.lanes)
        self._observe_shares("tenant", sample.tenants)

    def _observe_shares(self, by: str, shares: tuple[Share, ...]) -> None:
        """Each share's window gauges; names no longer shown (a tenant out of the top, a
        lane with no image in the window) removed, so a scrape shows the window's set."""
        names = {share.name for share in shares}
        for gone in self._shown[by] - names:
            for key in SHARE_GAUGES:
                self._families[f"{by}_{key}"].remove(self.pool, gone)
        self._shown[by] = names
        for share in shares:
            for key in SHARE_GAUGES:
                value = getattr(share, key)
                gauge = self._families[f"{by}_{key}"].labels(self.pool, share.name)
                gauge.set(value if value is not None else float("nan"))

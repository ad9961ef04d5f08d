"""The Prometheus endpoint on the control host: `/metrics`, served by the autoscaler.

Gauges follow the pool at each tick (queue, runs, hosts); counters and histograms follow
the finished batches as the fleet view reads them (so they lag by up to one refresh);
the fleet gauges (throughput, cost per image) follow each refresh. Its own registry, so a
scrape shows these figures and not the process's internals.
"""

from __future__ import annotations

from typing import Any

from img2img.fleet import BatchDigest, FleetSample
from img2img.scaling import Decision, Observation

# Seconds, from a fast stage on the device to a long queue wait.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class PrometheusMetrics:
    def __init__(self, pool: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pool = pool
        labels = ["pool"]

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, labels, registry=r).labels(pool)

        self.queued_runs = gauge("img2img_queued_runs", "Flow runs waiting for a slot")
        self.running_runs = gauge("img2img_running_runs", "Flow runs running")
        self.hosts_wanted = gauge("img2img_hosts_wanted", "Hosts the autoscaler holds")
        self.hosts_running = gauge("img2img_hosts_online", "Hosts with a worker online")
        self.queued_messages = gauge(
            "img2img_queued_messages", "Upload events waiting in the ingest queue"
        )
        self.dead_letters = gauge("img2img_dead_letter_messages", "Messages in the DLQ")
        self.images_per_minute = gauge("img2img_images_per_minute", "Throughput, fleet window")
        self.duty_cycle = gauge("img2img_duty_cycle", "Busy slots ÷ slots held, fleet window")
        self.cost_per_image = gauge(
            "img2img_cost_per_image_usd", "Host cost ÷ images with an outcome, fleet window"
        )
        self.e2e_p95 = gauge("img2img_end_to_end_p95_seconds", "Upload → result p95, window")
        self._images = Counter(
            "img2img_images", "Images with an outcome", ["pool", "outcome"], registry=r
        )
        self._failures = Counter(
            "img2img_failures",
            "Failed images by the stage they failed at",
            ["pool", "stage"],
            registry=r,
        )
        self._stage = Histogram(
            "img2img_stage_seconds",
            "Per-image time in each stage (completed images)",
            ["pool", "stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self._e2e = Histogram(
            "img2img_end_to_end_seconds",
            "Upload event → outcome per image",
            ["pool"],
            buckets=BUCKETS,
            registry=r,
        )
        self._server: Any = None

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
        for stage, count in batch.failed_at.items():
            self._failures.labels(self.pool, stage).inc(count)
        for stage, values in batch.stage_ms.items():
            hist = self._stage.labels(self.pool, stage)
            for ms in values:
                hist.observe(ms / 1000.0)
        e2e = self._e2e.labels(self.pool)
        for ms in batch.e2e_ms:
            e2e.observe(ms / 1000.0)

    def observe_fleet(self, sample: FleetSample) -> None:
        self.images_per_minute.set(sample.images_per_min)
        self.duty_cycle.set(sample.duty_cycle)
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

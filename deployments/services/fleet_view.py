"""The fleet view, kept by the autoscaler on the control host.

Every autoscaler tick adds the pool's size and runs; every `monitor.fleet_interval_s` the
view reads the batches that finished since (their `img2img.batch.*` events), the queues'
depths and the online workers, then publishes the same figures four ways:

- the markdown artifact `img2img-fleet` (figures and a time-series chart), updated in place
  so the database keeps one artifact, not one a minute;
- the Prometheus endpoint (`metrics_endpoint.py`), when it is served;
- CloudWatch, where the autoscaler already publishes (AWS);
- events for the alerts: `img2img.pool.starved` / `.recovered` (hosts wanted, no worker
  online for `monitor.starved_after_s`) and `img2img.dlq.not-empty` / `.drained`.

Nothing here may stop scaling: each part fails alone, with a warning.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from deployments.services.pool_runs import PoolResource, online_hosts
from img2img.config.aws import StorageSettings
from img2img.config.monitor import MonitorSettings
from img2img.pipeline.topology import artifact_key
from img2img.scaling.fleet import BatchDigest, FleetSample, FleetWindow, markdown
from img2img.scaling.policy import Decision, Observation

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from deployments.services.metrics_endpoint import PrometheusMetrics

log = logging.getLogger("img2img.fleet")

ARTIFACT_KEY = "img2img-fleet"
BATCH_EVENTS = "img2img.batch."
MAX_EVENT_PAGES = 200  # a minute of batches at 37 a second is about 45 pages of 50


class FleetSink(Protocol):
    """Somewhere else the fleet's figures go (CloudWatch on AWS)."""

    def publish_fleet(self, sample: FleetSample) -> None: ...


class FleetView:
    def __init__(
        self,
        prefect: SyncPrefectClient,
        pool: str,
        monitor: MonitorSettings,
        slots_per_host: int,
        sqs: Any = None,
        storage: StorageSettings | None = None,
        sinks: Sequence[FleetSink] = (),
        prometheus: PrometheusMetrics | None = None,
        clock: Callable[[], float] = time.time,
        idle_launch_limit: int = 2,
        top_tenants: int = 10,
        lane_order: tuple[str, ...] = (),
    ) -> None:
        self.prefect = prefect
        self.pool = pool
        self.monitor = monitor
        self.sqs = sqs
        self.storage = storage
        self.sinks = list(sinks)
        self.prometheus = prometheus
        self.clock = clock
        self.window = FleetWindow(
            monitor.fleet_window_s,
            monitor.price_per_hour,
            slots_per_host,
            top_tenants=top_tenants,
            lane_order=lane_order,
        )
        self.history: deque[FleetSample] = deque(maxlen=monitor.fleet_history)
        self.last_refresh: float | None = None
        # The figures start with the service: host-hours before it are unknown, so batches
        # before it would make the cost per image wrong.
        self._cursor = clock()
        self._seen: dict[UUID, float] = {}
        self._artifact: UUID | None = None
        self.pool_resource = PoolResource(prefect, pool)
        self.artifact_key = artifact_key(ARTIFACT_KEY, pool)
        self._queue_urls: dict[str, str] = {}
        self._starved_since: float | None = None
        self._starved = False
        self._dead_letters_before = 0
        self._wasting = False
        self.idle_launch_limit = idle_launch_limit

    # -- fed by the autoscaler -------------------------------------------------------------

    def observe(
        self,
        obs: Observation,
        decision: Decision,
        unhealthy_hosts: int = 0,
        slot_recycles: int = 0,
    ) -> FleetSample | None:
        """One autoscaler tick; refreshes the view when it is due and returns its sample."""
        now = self.clock()
        self.window.add_hosts(now, decision.desired, obs.running, obs.queued)
        self.window.idle_launches = len(obs.idle_launches)
        self.window.unhealthy_hosts = unhealthy_hosts
        self.window.slot_recycles = slot_recycles
        if self.prometheus is not None:
            self.prometheus.observe_pool(obs, decision)
        # Starvation is judged at every tick (a cold start can be shorter than a refresh).
        self._guard(
            "emit the starvation events",
            self._starvation,
            decision.desired,
            obs.live_hosts,
            obs.queued,
            now,
        )
        if (
            self.last_refresh is not None
            and now - self.last_refresh < self.monitor.fleet_interval_s
        ):
            return None
        return self.refresh(now)

    def refresh(self, now: float | None = None) -> FleetSample:
        now = self.clock() if now is None else now
        self.last_refresh = now
        self._guard("read the finished batches", self._read_batches, now)
        self._guard("read the queues' depths", self._read_queues)
        self._guard("read the pool's workers", self._read_workers)
        sample = self.window.sample(now)
        self.history.append(sample)
        # The cheap views first: the chart takes a moment to draw.
        if self.prometheus is not None:
            self.prometheus.observe_fleet(sample)
        for sink in self.sinks:
            self._guard("publish the fleet metrics", sink.publish_fleet, sample)
        self._guard("publish the fleet artifact", self._publish_artifact, sample)
        self._guard("emit the alert events", self._alerts, sample, now)
        log.info(
            "fleet: %.1f images/min, p95 %s, %d host(s), duty %.0f%%, cost/image %s",
            sample.images_per_min,
            f"{sample.e2e_p95_s:.1f} s" if sample.e2e_p95_s is not None else "–",
            sample.hosts,
            100 * sample.duty_cycle,
            f"${sample.cost_per_image_usd:.6f}" if sample.cost_per_image_usd else "–",
        )
        return sample

    # -- reading --------------------------------------------------------------------------

    def _read_batches(self, now: float) -> None:
        from prefect.events.filters import (
            EventFilter,
            EventNameFilter,
            EventOccurredFilter,
            EventOrder,
            EventRelatedFilter,
        )

        # Events reach the API a little after they happen: read again from a minute
        # before the last read and drop the ones already counted.
        since = datetime.fromtimestamp(self._cursor - 60.0, UTC)
        page = self.prefect.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since, until=datetime.fromtimestamp(now, UTC)),
                event=EventNameFilter(prefix=[BATCH_EVENTS]),
                related=EventRelatedFilter(id=[self.pool_resource.resource_id]),
                order=EventOrder.ASC,
            ),
            limit=50,
        )
        for _ in range(MAX_EVENT_PAGES):
            for event in page.events:
                if event.id in self._seen:
                    continue
                at = event.occurred.timestamp()
                self._seen[event.id] = at
                digest = BatchDigest.from_payload(at, event.payload)
                self.window.add_batch(digest)
                if self.prometheus is not None:
                    self.prometheus.observe_batch(digest)
            if page.next_page is None:
                break
            page = self.prefect.read_events_page(str(page.next_page))
        self._cursor = now
        horizon = now - self.monitor.fleet_window_s - 120.0
        self._seen = {k: v for k, v in self._seen.items() if v >= horizon}

    def _read_queues(self) -> None:
        if self.sqs is None or self.storage is None:
            return
        depth = {}
        for name in (self.storage.ingest_queue, self.storage.dead_letter_queue):
            if name not in self._queue_urls:
                self._queue_urls[name] = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self._queue_urls[name], AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            depth[name] = int(attrs["ApproximateNumberOfMessages"])
        self.window.queued_messages = depth[self.storage.ingest_queue]
        self.window.dead_letters = depth[self.storage.dead_letter_queue]

    def _read_workers(self) -> None:
        self.window.hosts_online = len(online_hosts(self.prefect, self.pool))

    # -- publishing -----------------------------------------------------------------------

    def _publish_artifact(self, sample: FleetSample) -> None:
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

        from img2img.observe.charts import data_uri, fleet_png

        chart = None
        if len(self.history) >= 2:
            chart = data_uri(fleet_png(list(self.history), f"work pool {self.pool}"))
        body = markdown(sample, self.pool, self.monitor.instance_type, chart)
        description = (
            f"Fleet figures of work pool {self.pool}, refreshed every "
            f"{self.monitor.fleet_interval_s:.0f} s by the autoscaler"
        )
        if self._artifact is None:
            self._artifact = self._existing_artifact()
        if self._artifact is not None:
            self.prefect.update_artifact(
                self._artifact, ArtifactUpdate(data=body, description=description)
            )
            return
        created = self.prefect.create_artifact(
            ArtifactCreate(
                key=self.artifact_key, type="markdown", data=body, description=description
            )
        )
        self._artifact = created.id

    def _existing_artifact(self) -> UUID | None:
        """The fleet artifact an earlier run of this service made: a restart keeps
        updating it instead of adding another."""
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
        from prefect.client.schemas.sorting import ArtifactSort

        found = self.prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[self.artifact_key])),
            sort=ArtifactSort.UPDATED_DESC,
            limit=1,
        )
        return found[0].id if found else None

    def _starvation(self, wanted: int, online: int, queued: int, now: float) -> None:
        """`img2img.pool.starved` once hosts have been wanted with no worker online for
        `monitor.starved_after_s`; `.recovered` when a worker is online again."""
        from prefect.events import emit_event

        wanted_no_worker = wanted > 0 and online == 0
        if wanted_no_worker:
            self._starved_since = self._starved_since or now
        else:
            self._starved_since = None
        starving = (
            self._starved_since is not None
            and now - self._starved_since >= self.monitor.starved_after_s
        )
        if starving and not self._starved:
            emit_event(
                event="img2img.pool.starved",
                resource=self.pool_resource.resource(),
                payload={
                    "hosts_wanted": wanted,
                    "hosts_online": online,
                    "queued_runs": queued,
                    "for_s": round(now - (self._starved_since or now)),
                },
            )
            log.warning("work pool %s: %d host(s) wanted, no worker online", self.pool, wanted)
        elif self._starved and not wanted_no_worker:
            emit_event(
                event="img2img.pool.recovered", resource=self.pool_resource.resource(), payload={}
            )
        self._starved = starving or (self._starved and wanted_no_worker)

    def _alerts(self, sample: FleetSample, now: float) -> None:
        from prefect.events import emit_event

        pool = self.pool_resource.resource()
        # Hosts paid for in vain, repeatedly: the policy is backing off (once per episode).
        wasting = sample.idle_launches >= self.idle_launch_limit
        if wasting and not self._wasting:
            emit_event(
                event="img2img.pool.idle-launches",
                resource=pool,
                payload={"idle_launches": sample.idle_launches, "hosts": sample.hosts},
            )
            log.warning(
                "work pool %s: %d hosts launched lately served no run",
                self.pool,
                sample.idle_launches,
            )
        self._wasting = wasting

        dead = sample.dead_letters
        if dead is None or self.storage is None:
            return
        queue = {
            "prefect.resource.id": f"img2img.sqs.{self.storage.dead_letter_queue}",
            "prefect.resource.name": self.storage.dead_letter_queue,
        }
        if dead > 0 and self._dead_letters_before == 0:
            emit_event(event="img2img.dlq.not-empty", resource=queue, payload={"messages": dead})
            log.warning("%d message(s) in the dead-letter queue", dead)
        elif dead == 0 and self._dead_letters_before > 0:
            emit_event(event="img2img.dlq.drained", resource=queue, payload={})
        self._dead_letters_before = dead

    @staticmethod
    def _guard(what: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # the view is advisory: never stop scaling for it
            log.warning("fleet view: could not %s: %s", what, exc)

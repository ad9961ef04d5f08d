"""The autoscaler service: reads the work pool's queue, decides, applies, publishes.

It runs as a long-running service (like the dispatcher), not as a scheduled deployment:
a decision every `scaling.interval_s` seconds needs no worker of its own to pick it up, does
not add a flow run to the UI every 15 seconds, and reacts within one interval. Every change
of size is visible in Prefect all the same: an event `img2img.autoscaler.scaled` on the
work pool's resource (Events page, automations) and a table artifact `img2img-autoscaler`
whose history lists each decision with its reason.

Two things a queue alone does not show are watched here too:
- a warm worker that lost every slot says so (`img2img.worker.unhealthy`): its host is
  replaced through the target, and its runs stop counting as work;
- a host that left without serving a run was launched in vain: each one is counted
  (`idle_launches`, the fleet view, `img2img.autoscaler.idle-launch`), and the policy backs
  off after several (`img2img.scaling.policy.launch_backoff`).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from deployments.services.loop import LoopService
from deployments.services.pool_runs import (
    PAGE,
    PoolResource,
    online_workers,
    pool_filter,
    pool_runs,
)
from deployments.services.scale_targets import MetricsSink, ScaleTarget
from deployments.worker.names import RECYCLED_EVENT, UNHEALTHY_EVENT, host_of
from img2img.config.scaling import ScalingSettings
from img2img.pipeline.topology import artifact_key
from img2img.scaling.forecast import Forecast, day_offsets, forecast, history_counts
from img2img.scaling.policy import (
    Decision,
    LowerLanes,
    Observation,
    PolicyState,
    decide,
    upstream_rate,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.client.schemas.objects import FlowRun

    from deployments.services.fleet_view import FleetView

log = logging.getLogger("img2img.autoscaler")

ARTIFACT_KEY = "img2img-autoscaler"
IDLE_LAUNCH_EVENT = "img2img.autoscaler.idle-launch"
REPLACED_EVENT = "img2img.autoscaler.replaced"
HELD_EVENT = "img2img.autoscaler.replacement-held"
REPLACE_WINDOW_S = 3600.0


class Autoscaler(LoopService[None]):
    log = log
    stopping_note = "stopping the autoscaler (hosts are left as they are)"

    def __init__(
        self,
        prefect: SyncPrefectClient,
        pool: str,
        policy: ScalingSettings,
        target: ScaleTarget,
        metrics: MetricsSink | None = None,
        rate_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        fleet: FleetView | None = None,
        lower_lanes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(clock)
        # With lanes: the work queues of the lanes below the first (bulk), counted apart.
        self.lower_lanes = lower_lanes
        self.prefect = prefect
        self.fleet = fleet
        self.pool = pool
        self.policy = policy
        self.target = target
        self.metrics = metrics
        self.rate_window_s = rate_window_s
        self.state = PolicyState()
        self.history: list[dict[str, Any]] = []
        self.busy: set[str] = set()
        self.pool_resource = PoolResource(prefect, pool)
        self._last_look: datetime | None = None
        # Workers that said they are unhealthy (name → reason), and those replaced.
        self.unhealthy: dict[str, str] = {}
        self._unhealthy_at: dict[str, float] = {}  # when (self.clock()) each was seen
        self.replaced: set[str] = set()
        self._replaced_at: list[float] = []  # when (self.clock()) each replacement was made
        self._held: set[str] = set()  # workers whose replacement waits for the hourly cap
        self._health_cursor: datetime | None = None
        # Slot recycles reported by the pool's workers: event id → when (self.clock()) seen.
        self._recycled_at: dict[str, float] = {}
        # Idle launches: workers seen online (name → first seen), those seen serving, and
        # when (self.clock()) a worker left having served nothing.
        self._online: dict[str, datetime] = {}
        self._served: set[str] = set()
        self._looked = False
        self.idle_launches: list[float] = []
        self.idle_launch_total = 0
        # Split topology: the stage-1 pool's autoscaler, for the stage-2 pool's (work on
        # its way is seen a stage ahead); `last` is each one's latest observation.
        self.upstream: Autoscaler | None = None
        self.last: Observation | None = None
        self.last_desired: int | None = None

    # -- observing the pool -----------------------------------------------------------------

    def observe(self) -> Observation:
        from prefect.client.schemas.sorting import FlowRunSort

        now = datetime.now(UTC)
        pool = pool_filter(self.pool)
        self._read_health(now)
        queued = self.queued(now)
        # The running runs themselves (their workers are the busy hosts); their count is
        # the running figure, so it needs no request of its own. Runs held by an unhealthy
        # worker are no work any host can do until they are released.
        running_runs = [
            r
            for r in pool_runs(self.prefect, self.pool, ["RUNNING", "CANCELLING"])
            if _worker_of(r) not in self.unhealthy
        ]
        running = len(running_runs)
        self.busy = {host_of(w) for r in running_runs if (w := _worker_of(r))}

        def arrived_since(start: datetime) -> int:
            runs = _runs_filter([], after=start, before=now)
            return int(self.prefect.count_flow_runs(flow_run_filter=runs, work_pool_filter=pool))

        window_start = now - timedelta(seconds=self.rate_window_s)
        arrived = arrived_since(window_start)
        # Since the last look, apart: it tells a step in the load, and a burst from load
        # (see the policy); consecutive looks count each arrival once.
        last = self._last_look or now - timedelta(seconds=self.policy.interval_s)
        last = max(last, now - timedelta(seconds=self.rate_window_s))
        self._last_look = now
        since = max((now - last).total_seconds(), 1e-3)
        recent = arrived_since(last) / since
        finished = self.prefect.read_flow_runs(
            flow_run_filter=_runs_filter(["COMPLETED", "FAILED"]),
            work_pool_filter=pool,
            sort=FlowRunSort.END_TIME_DESC,
            limit=20,
        )
        durations = [
            r.total_run_time.total_seconds()
            for r in finished
            if r.total_run_time and r.total_run_time.total_seconds() > 0
        ]
        online = online_workers(self.prefect, self.pool) - set(self.unhealthy)
        serving = {w for r in [*running_runs, *finished] if (w := _worker_of(r))}
        self._count_idle_launches(online, serving, now)
        return Observation(
            now=self.clock(),
            queued=queued,
            running=running,
            current_desired=self.target.current(),
            live_hosts=len({host_of(w) for w in online}),
            busy_hosts=len(self.busy),
            idle_launches=tuple(self.idle_launches),
            recent_run_s=statistics.median(durations) if durations else None,
            arrival_rate=arrived / self.rate_window_s,
            recent_arrival_rate=recent,
            recent_window_s=since,
            rate_window_s=self.rate_window_s,
            warm=self.target.warm(),
            forecast=self._forecast(now, recent) if self.policy.forecast.enabled else None,
            lower=self._lower(now, window_start, last, running_runs) if self.lower_lanes else None,
            **self.upstream_view(),
        )

    def _lower(
        self, now: datetime, window_start: datetime, last: datetime, running: list[FlowRun]
    ) -> LowerLanes:
        """The runs in the lower lanes' work queues: queued (due), running (from the running
        runs already read) and arriving per second over the rate window and since the last
        look (three counts)."""
        pool = pool_filter(self.pool)
        due = now + timedelta(seconds=self.policy.interval_s)
        queued = self.prefect.count_flow_runs(
            flow_run_filter=_runs_filter(
                ["SCHEDULED", "PENDING"], before=due, queues=self.lower_lanes
            ),
            work_pool_filter=pool,
        )
        arrived = self.prefect.count_flow_runs(
            flow_run_filter=_runs_filter(
                [], after=window_start, before=now, queues=self.lower_lanes
            ),
            work_pool_filter=pool,
        )
        recent = self.prefect.count_flow_runs(
            flow_run_filter=_runs_filter([], after=last, before=now, queues=self.lower_lanes),
            work_pool_filter=pool,
        )
        return LowerLanes(
            queued=int(queued),
            running=sum(1 for r in running if r.work_queue_name in self.lower_lanes),
            arrival_rate=int(arrived) / self.rate_window_s,
            recent_arrival_rate=int(recent) / max((now - last).total_seconds(), 1e-3),
        )

    def _read_health(self, now: datetime) -> None:
        """Take in the unhealthy-worker and slot-recycle events of the pool since the last
        look (from a minute before it: events reach the API a little after they happen, so
        an event may be read twice: each counts once)."""
        from prefect.events.filters import (
            EventFilter,
            EventNameFilter,
            EventOccurredFilter,
            EventRelatedFilter,
        )

        since = self._health_cursor or now - timedelta(seconds=self.policy.idle_launch_window_s)
        page = self.prefect.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since - timedelta(seconds=60), until=now),
                event=EventNameFilter(name=[UNHEALTHY_EVENT, RECYCLED_EVENT]),
                related=EventRelatedFilter(id=[self.pool_resource.resource_id]),
            ),
            limit=50,
        )
        self._health_cursor = now
        for event in page.events:
            if event.event == RECYCLED_EVENT:
                self._recycled_at.setdefault(str(event.id), self.clock())
                continue
            worker = str(event.payload.get("worker") or "")
            if worker and worker not in self.unhealthy:
                self.unhealthy[worker] = str(event.payload.get("reason") or "unhealthy")
                self._unhealthy_at[worker] = self.clock()
        while len(self.unhealthy) > 200:  # oldest first: long replaced
            oldest = next(iter(self.unhealthy))
            self.unhealthy.pop(oldest)
            self._unhealthy_at.pop(oldest, None)
        window = self.policy.idle_launch_window_s
        for event_id, seen in list(self._recycled_at.items()):
            if self.clock() - seen >= window:
                del self._recycled_at[event_id]

    def recent_recycles(self) -> int:
        """Slots of the pool recycled in the policy's window (`idle_launch_window_s`)."""
        window = self.policy.idle_launch_window_s
        return sum(1 for t in self._recycled_at.values() if self.clock() - t < window)

    def _count_idle_launches(self, online: set[str], serving: set[str], now: datetime) -> None:
        """Count the workers that left the pool without having served a run. Workers online
        at the first look are left out (what they did before is not known)."""
        self._served |= serving
        for worker in online:
            self._online.setdefault(worker, now)
        if not self._looked:
            self._served |= online
            self._looked = True
        for worker in [w for w in self._online if w not in online]:
            first_seen = self._online.pop(worker)
            if worker in self._served or self._served_since(worker, first_seen):
                self._served.discard(worker)
                continue
            self.idle_launches.append(self.clock())
            self.idle_launch_total += 1
            log.warning("idle launch: worker %s left without serving a run", worker)
            self._emit(IDLE_LAUNCH_EVENT, {"worker": worker, "total": self.idle_launch_total})
        window = self.policy.idle_launch_window_s
        self.idle_launches = [t for t in self.idle_launches if self.clock() - t < window]

    def _served_since(self, worker: str, since: datetime) -> bool:
        """Whether `worker` ran any of the pool's runs that started since `since` (one read,
        for a worker seen serving by no look: runs shorter than an interval)."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

        runs = self.prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=since - timedelta(seconds=60))
            ),
            work_pool_filter=pool_filter(self.pool),
            limit=PAGE,
        )
        return any(_worker_of(r) == worker for r in runs)

    def replace_unhealthy(self) -> list[str]:
        """Replace, once each, the hosts whose workers reported themselves unhealthy, at
        most `scaling.max_replaced_per_hour` in any hour (the rest wait: a report is an
        event any holder of the API credential could forge)."""
        done = []
        now = self.clock()
        self._replaced_at = [t for t in self._replaced_at if now - t < REPLACE_WINDOW_S]
        for worker, reason in list(self.unhealthy.items()):
            if worker in self.replaced:
                continue
            if len(self._replaced_at) >= self.policy.max_replaced_per_hour:
                if worker not in self._held:
                    self._held.add(worker)
                    log.error(
                        "replacement of host %s held: %d hosts replaced in the last hour, the "
                        "most scaling.max_replaced_per_hour allows (reported: %s)",
                        host_of(worker),
                        len(self._replaced_at),
                        reason,
                    )
                    self._emit(HELD_EVENT, {"worker": worker, "reason": reason})
                continue
            try:
                what = self.target.replace(host_of(worker), reason)
            except Exception as exc:
                log.warning("could not replace unhealthy host %s (will retry): %s", worker, exc)
                continue
            self.replaced.add(worker)
            self._held.discard(worker)
            self._replaced_at.append(self.clock())
            log.error(
                "replaced host %s: worker %s is unhealthy (%s): %s",
                host_of(worker),
                worker,
                reason,
                what,
            )
            self._emit(
                REPLACED_EVENT,
                {"worker": worker, "host": host_of(worker), "reason": reason, "applied": what},
            )
            done.append(worker)
        return done

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        from prefect.events import emit_event

        try:
            emit_event(event=event, resource=self.pool_resource.resource(), payload=payload)
        except Exception as exc:
            log.warning("could not emit %s: %s", event, exc)

    def queued(self, now: datetime | None = None) -> int:
        """The pool's scheduled (late included) and pending runs that are due: not ones set
        for later."""
        due = (now or datetime.now(UTC)) + timedelta(seconds=self.policy.interval_s)
        return int(
            self.prefect.count_flow_runs(
                flow_run_filter=_runs_filter(["SCHEDULED", "PENDING"], before=due),
                work_pool_filter=pool_filter(self.pool),
            )
        )

    def _forecast(self, now: datetime, recent_rate: float) -> Forecast:
        """The daily forecast from the pool's own runs at this time on past days, from
        Prefect's run history (one request per day read; the runs are kept
        `retention.runs_days`)."""
        settings = self.policy.forecast
        buckets = 1 + settings.buckets_ahead
        counts_by_day = []
        for back in day_offsets(settings):
            start = now - timedelta(seconds=back + settings.bucket_s)
            response = self.prefect.request(
                "POST",
                "/flow_runs/history",
                json={
                    "history_start": start.isoformat(),
                    "history_end": (
                        start + timedelta(seconds=buckets * settings.bucket_s)
                    ).isoformat(),
                    "history_interval_seconds": settings.bucket_s,
                    "work_pools": {"name": {"any_": [self.pool]}},
                },
            )
            response.raise_for_status()
            counts_by_day.append(history_counts(response.json(), buckets))
        return forecast(settings, counts_by_day, recent_rate)

    # -- deciding and applying --------------------------------------------------------------

    def upstream_view(self) -> dict[str, Any]:
        """The pool before this one, as its autoscaler last saw it (within two of its
        intervals): its runs queued or running (each becomes a run here) and their arrival
        rate, the higher of its window's and its last interval's."""
        before = self.upstream
        seen = before.last if before is not None else None
        if before is None or seen is None or self.clock() - seen.now > 2 * self.policy.interval_s:
            return {}
        hosts = before.last_desired if before.last_desired is not None else seen.current_desired
        run_s = seen.recent_run_s or before.policy.expected_run_s
        rate = upstream_rate(
            (seen.arrival_rate, seen.recent_arrival_rate), hosts, before.policy, run_s
        )
        return {"upstream": seen.queued + seen.running, "upstream_rate": rate}

    def step(self) -> Decision:
        obs = self.observe()
        self.last = obs
        self.replace_unhealthy()
        decision, self.state = decide(self.policy, obs, self.state)
        self.last_desired = decision.desired
        if decision.desired != obs.current_desired:
            applied = self.target.apply(decision.desired, self.busy)
            log.info(
                "pool %s: %d → %d hosts: %s (%s)",
                self.pool,
                obs.current_desired,
                decision.desired,
                decision.reason,
                applied,
            )
            self._record(obs, decision)
        else:
            log.debug("%s", decision.reason)
        if self.metrics is not None:
            try:
                self.metrics.publish(obs, decision)
            except Exception as exc:  # metrics are advisory: never stop scaling for them
                log.warning("could not publish metrics: %s", exc)
        if self.fleet is not None:
            try:
                window = self.policy.idle_launch_window_s
                lately = sum(1 for t in self._unhealthy_at.values() if self.clock() - t < window)
                self.fleet.observe(
                    obs, decision, unhealthy_hosts=lately, slot_recycles=self.recent_recycles()
                )
            except Exception as exc:
                log.warning("could not update the fleet view: %s", exc)
        return decision

    def _deployments(self) -> list[dict[str, str]]:
        """The deployments that run on the pool, as related resources of a scaling event
        (so it shows on each deployment's feed too)."""
        found = self.prefect.read_deployments(work_pool_filter=pool_filter(self.pool), limit=50)
        return [
            {
                "prefect.resource.id": f"prefect.deployment.{d.id}",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": d.name,
            }
            for d in found
        ]

    def _record(self, obs: Observation, decision: Decision) -> None:
        from prefect.client.schemas.actions import ArtifactCreate
        from prefect.events import emit_event

        row = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "from": obs.current_desired,
            "to": decision.desired,
            "queued": obs.queued,
            "running": obs.running,
            "arrivals_per_s": round(obs.arrival_rate or 0.0, 3),
            "usage": round(decision.usage, 3) if decision.usage != float("inf") else None,
            "reason": decision.reason,
        }
        self.history = [*self.history, row][-50:]
        try:
            emit_event(
                event="img2img.autoscaler.scaled",
                resource=self.pool_resource.resource(),
                related=self._deployments(),
                payload=row,
            )
            # Through the client: this service runs outside any flow run.
            self.prefect.create_artifact(
                ArtifactCreate(
                    key=artifact_key(ARTIFACT_KEY, self.pool),
                    type="table",
                    data=json.dumps(list(reversed(self.history))),
                    description=f"Scaling decisions for work pool {self.pool}",
                )
            )
        except Exception as exc:
            log.warning("could not record the decision in Prefect: %s", exc)

    # -- the loop ---------------------------------------------------------------------------

    def started(self) -> None:
        log.info(
            "autoscaling work pool %s with the %s target every %.0f s (%d to %d hosts)",
            self.pool,
            self.target.name,
            self.policy.interval_s,
            self.policy.min_hosts,
            self.policy.max_hosts,
        )

    def round(self) -> None:
        desired = None
        try:
            desired = self.step().desired
        except Exception as exc:  # the API or a target may be briefly unavailable
            log.warning("scaling step failed (will retry): %s", exc)
        self.wait_next(at_zero=desired == 0)

    def finished(self) -> None:
        return None

    def wait_next(self, at_zero: bool) -> None:
        """Until the next decision: one interval; with no host, less as soon as a run is
        queued (one count every `zero_interval_s`), so a first upload does not wait a
        whole interval for its host to be asked for."""
        until = self.clock() + self.policy.interval_s
        if not at_zero or self.policy.zero_interval_s >= self.policy.interval_s:
            self.wait(self.policy.interval_s)
            return
        while self.clock() < until:
            if self.wait(min(self.policy.zero_interval_s, until - self.clock())):
                return
            try:
                if self.queued() > 0:
                    return
            except Exception as exc:
                log.debug("could not count the queue: %s", exc)


def _worker_of(run: FlowRun) -> str | None:
    """The worker that claimed `run` (its `prefect.worker.name` label), if any."""
    name = (run.labels or {}).get("prefect.worker.name")
    return str(name) if name else None


def _runs_filter(
    types: list[str],
    after: datetime | None = None,
    before: datetime | None = None,
    queues: tuple[str, ...] = (),
) -> FlowRunFilter:
    """Runs in any of the state `types` (any state if none), expected to start within
    [`after`, `before`] where given, in one of the work `queues` where given."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterWorkQueueName,
    )
    from prefect.client.schemas.objects import StateType

    state = None
    if types:
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in types]))
    start = None
    if after is not None or before is not None:
        start = FlowRunFilterExpectedStartTime(after_=after, before_=before)
    queue = FlowRunFilterWorkQueueName(any_=list(queues)) if queues else None
    return FlowRunFilter(state=state, expected_start_time=start, work_queue_name=queue)

"""The autoscaler service: reads the work pool's queue, decides, applies, publishes.

It runs as a long-running service (like the dispatcher), not as a scheduled deployment:
a decision every `scaling.interval_s` seconds needs no worker of its own to pick it up, does
not add a flow run to the UI every 15 seconds, and reacts within one interval. Every change
of size is visible in Prefect all the same: an event `img2img.autoscaler.scaled` on the
work pool's resource (Events page, automations) and a table artifact `img2img-autoscaler`
whose history lists each decision with its reason.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from deployments.pool_runs import PoolResource, online_hosts, pool_runs
from deployments.scaling_backends import MetricsSink, ScalingBackend
from deployments.signals import stop_on_signals
from deployments.warm_worker import host_of
from img2img.forecast import Forecast, day_offsets, forecast, history_counts
from img2img.scaling import Decision, Observation, PolicyState, ScalingSettings, decide

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, WorkPoolFilter

    from deployments.fleet_view import FleetView

log = logging.getLogger("img2img.autoscaler")

ARTIFACT_KEY = "img2img-autoscaler"


class Autoscaler:
    def __init__(
        self,
        prefect: SyncPrefectClient,
        pool: str,
        policy: ScalingSettings,
        backend: ScalingBackend,
        metrics: MetricsSink | None = None,
        rate_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        fleet: FleetView | None = None,
    ) -> None:
        self.prefect = prefect
        self.fleet = fleet
        self.pool = pool
        self.policy = policy
        self.backend = backend
        self.metrics = metrics
        self.rate_window_s = rate_window_s
        self.clock = clock
        self.state = PolicyState()
        self.history: list[dict[str, Any]] = []
        self.busy: set[str] = set()
        self._stop = threading.Event()
        self.pool_resource = PoolResource(prefect, pool)
        self._last_look: datetime | None = None

    # -- observing the pool -----------------------------------------------------------------

    def observe(self) -> Observation:
        from prefect.client.schemas.sorting import FlowRunSort

        now = datetime.now(timezone.utc)
        pool = _pool_filter(self.pool)
        queued = self.queued(now)
        # The running runs themselves (their workers are the busy hosts); their count is
        # the running figure, so it needs no request of its own.
        running_runs = pool_runs(self.prefect, self.pool, ["RUNNING", "CANCELLING"])
        running = len(running_runs)
        self.busy = {
            host_of(str(r.labels.get("prefect.worker.name")))
            for r in running_runs
            if r.labels and r.labels.get("prefect.worker.name")
        }

        def arrived_since(start: datetime) -> int:
            runs = _runs_filter([], after=start, before=now)
            return int(self.prefect.count_flow_runs(flow_run_filter=runs, work_pool_filter=pool))

        arrived = arrived_since(now - timedelta(seconds=self.rate_window_s))
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
        return Observation(
            now=self.clock(),
            queued=queued,
            running=running,
            current_desired=self.backend.current(),
            live_hosts=len(online_hosts(self.prefect, self.pool)),
            recent_run_s=statistics.median(durations) if durations else None,
            arrival_rate=arrived / self.rate_window_s,
            recent_arrival_rate=recent,
            recent_window_s=since,
            rate_window_s=self.rate_window_s,
            warm=self.backend.warm(),
            forecast=self._forecast(now, recent) if self.policy.forecast.enabled else None,
        )

    def queued(self, now: datetime | None = None) -> int:
        """The pool's scheduled (late included) and pending runs that are due: not ones set
        for later."""
        due = (now or datetime.now(timezone.utc)) + timedelta(seconds=self.policy.interval_s)
        return int(
            self.prefect.count_flow_runs(
                flow_run_filter=_runs_filter(["SCHEDULED", "PENDING"], before=due),
                work_pool_filter=_pool_filter(self.pool),
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

    def step(self) -> Decision:
        obs = self.observe()
        decision, self.state = decide(self.policy, obs, self.state)
        if decision.desired != obs.current_desired:
            applied = self.backend.apply(decision.desired, self.busy)
            log.info(
                "%d → %d hosts: %s (%s)",
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
                self.fleet.observe(obs, decision)
            except Exception as exc:
                log.warning("could not update the fleet view: %s", exc)
        return decision

    def _deployments(self) -> list[dict[str, str]]:
        """The deployments that run on the pool, as related resources of a scaling event
        (so it shows on each deployment's feed too)."""
        from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

        found = self.prefect.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self.pool])), limit=50
        )
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
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
                    key=ARTIFACT_KEY,
                    type="table",
                    data=json.dumps(list(reversed(self.history))),
                    description=f"Scaling decisions for work pool {self.pool}",
                )
            )
        except Exception as exc:
            log.warning("could not record the decision in Prefect: %s", exc)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop_after_s: float | None = None) -> None:
        deadline = None if stop_after_s is None else self.clock() + stop_after_s
        log.info(
            "autoscaling work pool %s with the %s backend every %.0f s (%d to %d hosts)",
            self.pool,
            self.backend.name,
            self.policy.interval_s,
            self.policy.min_hosts,
            self.policy.max_hosts,
        )
        while not self._stop.is_set() and (deadline is None or self.clock() < deadline):
            desired = None
            try:
                desired = self.step().desired
            except Exception as exc:  # the API or a backend may be briefly unavailable
                log.warning("scaling step failed (will retry): %s", exc)
            self.wait_next(at_zero=desired == 0)

    def wait_next(self, at_zero: bool) -> None:
        """Until the next decision: one interval; with no host, less as soon as a run is
        queued (one count every `zero_interval_s`), so a first upload does not wait a
        whole interval for its host to be asked for."""
        until = self.clock() + self.policy.interval_s
        if not at_zero or self.policy.zero_interval_s >= self.policy.interval_s:
            self._stop.wait(self.policy.interval_s)
            return
        while self.clock() < until:
            if self._stop.wait(min(self.policy.zero_interval_s, until - self.clock())):
                return
            try:
                if self.queued() > 0:
                    return
            except Exception as exc:
                log.debug("could not count the queue: %s", exc)

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop, log, "stopping the autoscaler (hosts are left as they are)")


def _pool_filter(pool: str) -> WorkPoolFilter:
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    return WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))


def _runs_filter(
    types: list[str], after: datetime | None = None, before: datetime | None = None
) -> FlowRunFilter:
    """Runs in any of the state `types` (any state if none), expected to start within
    [`after`, `before`] where given."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    state = None
    if types:
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in types]))
    start = None
    if after is not None or before is not None:
        start = FlowRunFilterExpectedStartTime(after_=after, before_=before)
    return FlowRunFilter(state=state, expected_start_time=start)

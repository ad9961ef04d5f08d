"""The scalers users would pick instead, as the simulator runs them, from their documentation.

Each is a small state machine called every `interval_s` with what the simulator sees (the
same `View` this project's policy gets) and returns the host count it asks for. One replica
or instance is one host here. Defaults are the documented ones, each cited where it is set;
where a scaler's behaviour is simplified, the docstring says how.

- `KedaSqs`: KEDA's `aws-sqs-queue` scaler driving a Kubernetes HPA.
- `SageMakerAsync`: SageMaker asynchronous inference with Application Auto Scaling target
  tracking on `ApproximateBacklogSizePerInstance`, plus the step policy on
  `HasBacklogWithoutCapacity` that leaves zero.
- `RayServe`: Ray Serve's default autoscaling policy (`replica_queue_length_autoscaling_policy`).
- `Img2ImgPolicy`: this project's policy (`img2img.scaling.policy.decide`), same interface.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from img2img.config.scaling import ScalingSettings
from img2img.scaling.forecast import Forecast
from img2img.scaling.policy import LowerLanes, Observation, PolicyState, decide


@dataclass(frozen=True)
class View:
    """What a scaler sees at `now`."""

    now: float
    queued: int  # requests waiting for a slot
    running: int  # requests being served
    desired: int  # the host count last asked for
    ready: int  # hosts serving (booted, not draining)
    recent_run_s: float | None = None
    arrival_rate: float | None = None  # requests per second over the last minute
    warm: int = 0  # stopped hosts waiting in a warm pool
    recent_arrival_rate: float | None = None  # requests per second since the last decision
    recent_window_s: float | None = None  # the time that rate is over
    forecast: Forecast | None = None  # the daily forecast, where the bench gives history
    upstream: int = 0  # split topology: requests in the stage before this pool
    upstream_rate: float | None = None  # their arrival rate there
    # With lanes: the lower lane's (bulk) queued, running, and arrivals per second over the
    # window and since the last decision (None: one lane). A peer sees the totals above
    # only: none of them knows lanes.
    lower: tuple[int, int, float, float | None] | None = None


class Scaler(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float:
        """Seconds between two calls of `decide`."""
        ...

    def decide(self, view: View) -> int: ...


def _clamp(hosts: int, max_hosts: int) -> int:
    return max(0, min(max_hosts, hosts))


# -- this project -------------------------------------------------------------------------


@dataclass
class Img2ImgPolicy:
    settings: ScalingSettings
    name: str = "img2img"
    state: PolicyState = field(default_factory=PolicyState)

    @property
    def interval_s(self) -> float:
        return self.settings.interval_s

    @property
    def zero_interval_s(self) -> float:
        return self.settings.zero_interval_s

    def decide(self, view: View) -> int:
        obs = Observation(
            now=view.now,
            queued=view.queued,
            running=view.running,
            current_desired=view.desired,
            live_hosts=view.ready,
            recent_run_s=view.recent_run_s,
            arrival_rate=view.arrival_rate,
            recent_arrival_rate=view.recent_arrival_rate,
            recent_window_s=view.recent_window_s,
            warm=view.warm,
            forecast=view.forecast,
            upstream=view.upstream,
            upstream_rate=view.upstream_rate,
            lower=LowerLanes(*view.lower) if view.lower is not None else None,
        )
        decision, self.state = decide(self.settings, obs, self.state)
        return decision.desired


# -- KEDA + HPA ---------------------------------------------------------------------------


@dataclass
class KedaSqs:
    """KEDA's SQS scaler and the HPA it feeds.

    - Metric: visible + in-flight messages (`scaleOnInFlight` true by default), one per
      request here; the HPA asks for ceil(metric ÷ `queueLength`) replicas (an AverageValue
      target), unless the ratio is within the HPA's tolerance of 1.
    - From zero: KEDA checks the queue every `pollingInterval` and activates to one replica
      when the metric exceeds `activationQueueLength`; the HPA takes over from there.
    - To zero: when the metric has not exceeded the activation value for `cooldownPeriod`.
    - Scale-up per HPA sync: at most max(double, +4 pods) (the HPA's default scale-up rule).
    - Scale-down: the highest recommendation of the last 300 s (the HPA's default
      scale-down stabilisation window).

    Sources: keda.sh/docs/latest/scalers/aws-sqs (queueLength "5", activationQueueLength 0,
    scaleOnInFlight true); keda.sh/docs/latest/reference/scaledobject-spec (pollingInterval
    30, cooldownPeriod 300); kubernetes.io/docs/tasks/run-application/horizontal-pod-
    autoscale (sync period 15 s, tolerance 0.1, scaleDown stabilizationWindowSeconds 300,
    scaleUp policies 100 % or 4 pods per 15 s).
    """

    max_hosts: int
    queue_length: float = 5.0
    activation_queue_length: float = 0.0
    polling_interval_s: float = 30.0
    cooldown_period_s: float = 300.0
    stabilization_down_s: float = 300.0
    tolerance: float = 0.1
    name: str = "keda"
    interval_s: float = 15.0  # the HPA's sync period
    _last_poll: float = -math.inf
    _last_active: float = -math.inf
    _recommendations: deque[tuple[float, int]] = field(default_factory=deque)

    def decide(self, view: View) -> int:
        messages = view.queued + view.running
        current = view.desired
        if current == 0:
            if view.now - self._last_poll < self.polling_interval_s:
                return 0
            self._last_poll = view.now
            if messages > self.activation_queue_length:
                self._last_active = view.now
                self._recommendations.clear()
                return _clamp(1, self.max_hosts)
            return 0
        if messages > self.activation_queue_length:
            self._last_active = view.now
        elif view.now - self._last_active >= self.cooldown_period_s:
            self._recommendations.clear()
            return 0
        ratio = messages / (current * self.queue_length)
        wanted = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(ratio * current)
        wanted = max(1, wanted)  # while KEDA is active the HPA keeps at least one replica
        self._recommendations.append((view.now, wanted))
        while self._recommendations[0][0] < view.now - self.stabilization_down_s:
            self._recommendations.popleft()
        if wanted > current:
            return _clamp(min(wanted, max(2 * current, current + 4)), self.max_hosts)
        stable = max(r for _, r in self._recommendations)
        return _clamp(min(current, stable), self.max_hosts)


# -- SageMaker asynchronous inference ----------------------------------------------------


@dataclass
class SageMakerAsync:
    """SageMaker async inference scaled by Application Auto Scaling.

    - Metric: `ApproximateBacklogSizePerInstance` (queued + in-process requests ÷ instances),
      published each minute; a datapoint is seen one minute late (CloudWatch's delay).
    - Target tracking asks for ceil(backlog ÷ target). Its alarms: scale out after 3
      datapoints above the target in a row, scale in after 15 datapoints below 90 % of it
      (the alarms target tracking creates); then the cooldown of that direction.
    - From zero: the backlog per instance is undefined, so a step policy on
      `HasBacklogWithoutCapacity` (alarm: 2 of 2 one-minute datapoints) adds one instance.

    Sources: docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html
    (TargetValue 5 for ApproximateBacklogSizePerInstance, the HasBacklogWithoutCapacity step
    policy, min capacity 0); docs.aws.amazon.com/autoscaling/application/userguide/
    application-auto-scaling-target-tracking.html (alarm datapoints; cooldowns, 300 s here
    both ways).
    """

    max_hosts: int
    target: float = 5.0
    scale_out_cooldown_s: float = 300.0
    scale_in_cooldown_s: float = 300.0
    out_datapoints: int = 3
    in_datapoints: int = 15
    zero_datapoints: int = 2
    name: str = "sagemaker"
    interval_s: float = 60.0  # one CloudWatch datapoint per minute
    _points: deque[tuple[int, int]] = field(default_factory=deque)  # (backlog, instances)
    _last_out: float = -math.inf
    _last_in: float = -math.inf

    def decide(self, view: View) -> int:
        current = view.desired
        # The datapoint of the minute that just ended becomes visible next minute.
        seen = list(self._points)
        self._points.append((view.queued + view.running, current))
        keep = max(self.in_datapoints, self.out_datapoints, self.zero_datapoints) + 1
        while len(self._points) > keep:
            self._points.popleft()
        if current == 0:
            recent = seen[-self.zero_datapoints :]
            if len(recent) == self.zero_datapoints and all(b > 0 and n == 0 for b, n in recent):
                self._last_out = view.now
                return _clamp(1, self.max_hosts)
            return 0
        backlog = seen[-1][0] if seen else view.queued + view.running
        wanted = math.ceil(backlog / self.target - 1e-9)
        per_instance = [b / n if n else math.inf for b, n in seen]
        high = per_instance[-self.out_datapoints :]
        if (
            len(high) == self.out_datapoints
            and all(p > self.target for p in high)
            and wanted > current
            and view.now - self._last_out >= self.scale_out_cooldown_s
        ):
            self._last_out = view.now
            return _clamp(wanted, self.max_hosts)
        low = per_instance[-self.in_datapoints :]
        if (
            len(low) == self.in_datapoints
            and all(p < 0.9 * self.target for p in low)
            and wanted < current
            and view.now - max(self._last_in, self._last_out) >= self.scale_in_cooldown_s
        ):
            self._last_in = view.now
            return _clamp(wanted, self.max_hosts)
        return current


# -- Ray Serve -------------------------------------------------------------------------------


@dataclass
class RayServe:
    """Ray Serve's default policy.

    - Metric: ongoing requests (queued + running), averaged over `look_back_period_s`.
    - Desired: ceil(ongoing ÷ `target_ongoing_requests`); a change is applied only after the
      same direction was decided for `upscale_delay_s` (up) or `downscale_delay_s` (down) in
      a row (`downscale_to_zero_delay_s` for 1 → 0, the same by default).
    - From zero: the cold-start path scales to one replica at once, and keeps the target
      while no replica runs yet (so a burst from zero waits for the first replica).
    - `min_replicas` is 0 here (its default is 1), to compare scale-to-zero with
      scale-to-zero.

    Sources: docs.ray.io/en/latest/serve/api/doc/ray.serve.config.AutoscalingConfig.html
    (target_ongoing_requests 2, upscale_delay_s 30, downscale_delay_s 600,
    look_back_period_s 30, metrics_interval_s 10); ray python/ray/serve/
    autoscaling_policy.py (delay counters, the cold-start path).
    """

    max_hosts: int
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0
    name: str = "ray"
    interval_s: float = 10.0  # metrics_interval_s: decisions in between see the same data
    _samples: deque[tuple[float, int]] = field(default_factory=deque)
    _counter_s: float = 0.0  # > 0: scaling up for this long; < 0: down

    def decide(self, view: View) -> int:
        ongoing = view.queued + view.running
        self._samples.append((view.now, ongoing))
        while self._samples[0][0] < view.now - self.look_back_period_s:
            self._samples.popleft()
        target = view.desired
        if view.ready == 0:
            self._counter_s = 0.0
            return _clamp(max(1, target) if ongoing > 0 else target, self.max_hosts)
        average = sum(n for _, n in self._samples) / len(self._samples)
        wanted = _clamp(math.ceil(average / self.target_ongoing_requests - 1e-9), self.max_hosts)
        if wanted > target:
            self._counter_s = max(self._counter_s, 0.0) + self.interval_s
            if self._counter_s > self.upscale_delay_s:
                self._counter_s = 0.0
                return wanted
        elif wanted < target:
            self._counter_s = min(self._counter_s, 0.0) - self.interval_s
            if target > 1:
                wanted = max(1, wanted)
            if -self._counter_s > self.downscale_delay_s:
                self._counter_s = 0.0
                return wanted
        else:
            self._counter_s = 0.0
        return target

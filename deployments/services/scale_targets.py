"""Where the autoscaler's decision is applied, and where its figures are published.

Each target answers `current()` (the desired size it holds now) and `apply(desired, busy)`,
where `busy` names the workers (hosts) that are running flow runs: no target ever picks a
busy host for scale-in. A host that is asked to go drains first (SIGTERM to its warm worker).
`replace(host)` takes away a host whose worker reported itself unhealthy, at once, and the
group brings the size back with a new one.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from img2img.scaling.fleet import FleetSample
from img2img.scaling.policy import Decision, Observation

log = logging.getLogger("img2img.autoscaler")


class ScaleTarget(Protocol):
    """Where the autoscaler applies its decision."""

    name: str

    def current(self) -> int: ...

    def apply(self, desired: int, busy: set[str]) -> str: ...

    def replace(self, host: str, reason: str) -> str:
        """Take away `host` (its worker is unhealthy) for a new one; says what was done."""
        ...

    def warm(self) -> int:
        """Stopped instances waiting in a warm pool, ready to resume (0 without one)."""
        ...


class MetricsSink(Protocol):
    """Where the autoscaler publishes its signal (CloudWatch on AWS)."""

    def publish(self, obs: Observation, decision: Decision) -> None: ...


class AsgTarget:
    """An EC2 Auto Scaling group of Inf2 hosts; each host's worker is named by its instance id.

    Hosts running flow runs get scale-in protection and idle ones lose it, so the group
    terminates idle hosts first; the group's terminating lifecycle hook lets a host drain
    before it goes (see infra/).
    """

    name = "asg"

    def __init__(self, autoscaling: Any, group: str) -> None:
        self.autoscaling = autoscaling
        self.group = group

    def _describe(self) -> dict[str, Any]:
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[self.group])
        if not groups["AutoScalingGroups"]:
            raise LookupError(f"Auto Scaling group {self.group!r} does not exist")
        group: dict[str, Any] = groups["AutoScalingGroups"][0]
        return group

    def current(self) -> int:
        return int(self._describe()["DesiredCapacity"])

    def warm(self) -> int:
        """Instances of the group's warm pool that a scale-out would resume now."""
        found = self.autoscaling.describe_warm_pool(AutoScalingGroupName=self.group)
        return waiting_in_warm_pool(found.get("Instances", []))

    def protect(self, busy: set[str]) -> tuple[list[str], list[str]]:
        """Protect busy instances from scale-in and release idle ones."""
        instances = [i["InstanceId"] for i in self._describe().get("Instances", [])]
        protect, release = protection_plan(instances, busy)
        for ids, flag in ((protect, True), (release, False)):
            for start in range(0, len(ids), 50):
                self.autoscaling.set_instance_protection(
                    AutoScalingGroupName=self.group,
                    InstanceIds=ids[start : start + 50],
                    ProtectedFromScaleIn=flag,
                )
        return protect, release

    def apply(self, desired: int, busy: set[str]) -> str:
        protected, _ = self.protect(busy)
        self.autoscaling.set_desired_capacity(
            AutoScalingGroupName=self.group, DesiredCapacity=desired, HonorCooldown=False
        )
        return f"asg {self.group}: desired {desired} ({len(protected)} busy hosts protected)"

    def replace(self, host: str, reason: str) -> str:
        """Mark the instance unhealthy: the group terminates it (through its terminating
        hook) and launches another to keep the desired size."""
        self.autoscaling.set_instance_health(
            InstanceId=host, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False
        )
        return f"asg {self.group}: instance {host} marked Unhealthy ({reason})"


def waiting_in_warm_pool(instances: list[dict[str, Any]]) -> int:
    """Warm-pool instances ready to resume: stopped (or hibernated, or kept running) after
    their launch hook finished; `Warmed:Pending*` ones are still being prepared."""
    ready = {"Warmed:Stopped", "Warmed:Hibernated", "Warmed:Running"}
    return sum(1 for i in instances if i.get("LifecycleState") in ready)


def protection_plan(
    members: list[str], busy: set[str], host_of_member: Any = None
) -> tuple[list[str], list[str]]:
    """Which members (instances, tasks) to protect from scale-in and which to release: a
    member is busy when its host name (`host_of_member(member)`, the member itself by
    default) names a worker that runs flow runs."""
    name = host_of_member or (lambda member: member)
    protect = [m for m in members if name(m) in busy]
    release = [m for m in members if name(m) not in busy]
    return protect, release


def drain_choice(workers: list[tuple[int, str]], busy: set[str], count: int) -> list[int]:
    """Which `count` of a host's-worth of local workers ((index, worker name)) to drain on
    scale-in: idle ones first (a busy one drains only when idle ones do not cover the cut,
    and finishes its runs before it exits), newest (highest index) first among equals."""
    order = sorted(workers, key=lambda w: (w[1] in busy, -w[0]))
    return [index for index, _name in order[: max(count, 0)]]


class EcsTarget:
    """An ECS service (EC2 launch type with the Neuron device mapped, or CPU on Fargate).

    Each task's warm worker is named by its task id (`--name <task id>`). Tasks running flow
    runs get ECS task scale-in protection and idle ones lose it, so lowering the desired
    count stops idle tasks only; without it, ECS would pick any task and cut a drain short at
    the container's stop timeout. Protection expires after `protect_minutes` as a safety net
    (renewed every decision while the task is busy).
    """

    name = "ecs"

    def __init__(self, ecs: Any, cluster: str, service: str) -> None:
        self.ecs = ecs
        self.cluster = cluster
        self.service = service

    def warm(self) -> int:
        return 0  # ECS services have no warm pool

    def current(self) -> int:
        services = self.ecs.describe_services(cluster=self.cluster, services=[self.service])
        if not services["services"]:
            raise LookupError(f"ECS service {self.service!r} not found in {self.cluster!r}")
        return int(services["services"][0]["desiredCount"])

    protect_minutes = 120

    def protect(self, busy: set[str]) -> tuple[list[str], list[str]]:
        """Protect the service's busy tasks from scale-in and release the idle ones."""
        arns: list[str] = []
        for page in self.ecs.get_paginator("list_tasks").paginate(
            cluster=self.cluster, serviceName=self.service, desiredStatus="RUNNING"
        ):
            arns += page.get("taskArns", [])
        protect, release = protection_plan(arns, busy, lambda arn: arn.rsplit("/", 1)[-1])
        for tasks, flag in ((protect, True), (release, False)):
            for start in range(0, len(tasks), 10):  # the API takes 10 tasks per call
                extra = {"expiresInMinutes": self.protect_minutes} if flag else {}
                self.ecs.update_task_protection(
                    cluster=self.cluster,
                    tasks=tasks[start : start + 10],
                    protectionEnabled=flag,
                    **extra,
                )
        return protect, release

    def apply(self, desired: int, busy: set[str]) -> str:
        protected, _ = self.protect(busy)
        self.ecs.update_service(cluster=self.cluster, service=self.service, desiredCount=desired)
        return (
            f"ecs {self.cluster}/{self.service}: desired {desired} "
            f"({len(protected)} busy tasks protected)"
        )

    def replace(self, host: str, reason: str) -> str:
        """Stop the task (its worker names it by task id); the service starts another."""
        self.ecs.stop_task(cluster=self.cluster, task=host, reason=f"img2img: {reason}"[:255])
        return f"ecs {self.cluster}/{self.service}: task {host} stopped ({reason})"


class CloudWatchMetrics:
    """Publishes the autoscaler's signal, so AWS target tracking can use it instead."""

    def __init__(self, cloudwatch: Any, namespace: str, pool: str) -> None:
        self.cloudwatch = cloudwatch
        self.namespace = namespace
        self.pool = pool

    def publish(self, obs: Observation, decision: Decision) -> None:
        dims = [{"Name": "WorkPool", "Value": self.pool}]
        hosts = max(decision.desired, 1)
        usage = decision.usage if decision.usage != float("inf") else float(decision.demand)
        metrics = {
            "QueuedRuns": (float(obs.queued), "Count"),
            "RunningRuns": (float(obs.running), "Count"),
            "DesiredHosts": (float(decision.desired), "Count"),
            "UsageRate": (usage, "None"),
            "BacklogPerHost": (obs.queued / hosts, "None"),
        }
        self.cloudwatch.put_metric_data(
            Namespace=self.namespace,
            MetricData=[
                {"MetricName": name, "Dimensions": dims, "Value": value, "Unit": unit}
                for name, (value, unit) in metrics.items()
            ],
        )

    def publish_fleet(self, sample: FleetSample) -> None:
        """The fleet view's figures, next to the scaling signal (see fleet_view.py)."""
        dims = [{"Name": "WorkPool", "Value": self.pool}]
        metrics: dict[str, tuple[float | None, str]] = {
            "ImagesPerMinute": (sample.images_per_min, "Count"),
            "FailedImages": (float(sample.failed), "Count"),
            "EndToEndP50": (sample.e2e_p50_s, "Seconds"),
            "EndToEndP95": (sample.e2e_p95_s, "Seconds"),
            "DutyCycle": (sample.duty_cycle, "None"),
            "CostPerImage": (sample.cost_per_image_usd, "None"),
            "HostsOnline": (
                float(sample.hosts_online) if sample.hosts_online is not None else None,
                "Count",
            ),
            "DeadLetterMessages": (
                float(sample.dead_letters) if sample.dead_letters is not None else None,
                "Count",
            ),
        }
        self.cloudwatch.put_metric_data(
            Namespace=self.namespace,
            MetricData=[
                {"MetricName": name, "Dimensions": dims, "Value": value, "Unit": unit}
                for name, (value, unit) in metrics.items()
                if value is not None
            ],
        )

"""Where the autoscaler's decision is applied, and where its figures are published.

Each backend answers `current()` (the desired size it holds now) and `apply(desired, busy)`,
where `busy` names the workers (hosts) that are running flow runs: no backend ever picks a
busy host for scale-in. A host that is asked to go drains first (SIGTERM to its warm worker).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from img2img.scaling import Decision, Observation

log = logging.getLogger("img2img.autoscaler")


class ScalingBackend(Protocol):
    name: str

    def current(self) -> int: ...

    def apply(self, desired: int, busy: set[str]) -> str: ...


class AsgBackend:
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

    def protect(self, busy: set[str]) -> tuple[list[str], list[str]]:
        """Protect busy instances from scale-in and release idle ones."""
        instances = [i["InstanceId"] for i in self._describe().get("Instances", [])]
        protect = [i for i in instances if i in busy]
        release = [i for i in instances if i not in busy]
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


class EcsBackend:
    """An ECS service (EC2 launch type with the Neuron device mapped, or CPU on Fargate)."""

    name = "ecs"

    def __init__(self, ecs: Any, cluster: str, service: str) -> None:
        self.ecs = ecs
        self.cluster = cluster
        self.service = service

    def current(self) -> int:
        services = self.ecs.describe_services(cluster=self.cluster, services=[self.service])
        if not services["services"]:
            raise LookupError(f"ECS service {self.service!r} not found in {self.cluster!r}")
        return int(services["services"][0]["desiredCount"])

    def apply(self, desired: int, busy: set[str]) -> str:
        self.ecs.update_service(cluster=self.cluster, service=self.service, desiredCount=desired)
        return f"ecs {self.cluster}/{self.service}: desired {desired}"


class LocalBackend:
    """Warm worker processes on this machine (the embedded default)."""

    name = "local"

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def current(self) -> int:
        self.stack.reap()  # workers that exited (drained or killed) leave no <defunct> child
        return len(self.stack.running_workers())

    def apply(self, desired: int, busy: set[str]) -> str:
        workers = self.stack.running_workers()  # [(index, worker name)]
        if desired > len(workers):
            for _ in range(desired - len(workers)):
                self.stack.start_worker()
        elif desired < len(workers):
            # Idle workers first, newest first; a busy one drains before it exits.
            order = sorted(workers, key=lambda w: (w[1] in busy, -w[0]))
            for index, _name in order[: len(workers) - desired]:
                self.stack.drain_worker(index)
        return f"local: {desired} warm worker(s)"


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

"""The `local` scale target: warm worker processes of this machine's local stack, started,
drained and killed by the autoscaler like hosts of a pool. Registered under the
`img2img.scale_targets` entry point group, so the control host's composition root
(`deployments.services.autoscalers`) loads it by name without importing the local stack."""

from __future__ import annotations

from deployments.services.scale_targets import ScaleTarget, drain_choice
from img2img.config.settings import Settings
from infra.local.stack import LocalStack


class LocalTarget:
    """Warm worker processes on this machine (the embedded default), for one pool."""

    name = "local"

    def __init__(self, stack: LocalStack, pool: str | None = None) -> None:
        self.stack = stack
        self.pool = pool

    def warm(self) -> int:
        return 0  # a local worker starts from this machine's disk: there is nothing to resume

    def current(self) -> int:
        self.stack.reap()  # workers that exited (drained or killed) leave no <defunct> child
        return len(self.stack.running_workers(self.pool))

    def apply(self, desired: int, busy: set[str]) -> str:
        workers = self.stack.running_workers(self.pool)  # [(index, worker name)]
        if desired > len(workers):
            for _ in range(desired - len(workers)):
                self.stack.start_worker(self.pool)
        elif desired < len(workers):
            for index in drain_choice(workers, busy, len(workers) - desired):
                self.stack.drain_worker(index, self.pool)
        return f"local: {desired} warm worker(s)"

    def replace(self, host: str, reason: str) -> str:
        """Kill the worker and its slots (its process group): the next decision starts a new
        one if there is work."""
        for index, name in self.stack.running_workers(self.pool):
            if name == host:
                self.stack.kill_worker(index, self.pool)
                return f"local: {name} killed ({reason})"
        return f"local: {host} is already gone"


def local_target(settings: Settings, pool: str | None = None) -> ScaleTarget:
    """The entry point: the local stack of `settings`, for `pool` (None: the one pool)."""
    return LocalTarget(LocalStack(settings), pool)

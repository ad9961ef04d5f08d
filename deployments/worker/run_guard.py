"""Which runs a warm worker runs: only the project's own flows, as this release installed them.

A slot loads a run's flow as its deployment says: the entrypoint, and the pull steps that
Prefect runs first. Both are stored in the API, so whoever may write deployments (anyone
holding the API credential) could register one in the pool with a shell step and run code
on every host, as root, with the worker's role. The worker refuses such a run before any
slot takes it, with a Failed state that says why; the slot loads only the allow-listed
entrypoint, and runs no pull step itself (it sets the release's working directory), so a
deployment changed between the worker's check and the slot's load runs nothing foreign.

A run is taken when its deployment's flow is one of the release's (by name), with that
flow's entrypoint, and with either no pull steps or exactly the release's
(`prefect.yaml`: set the working directory to the project directory), compared by the
SHA-256 of their canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"


def steps_digest(steps: list[dict[str, Any]] | None) -> str:
    """SHA-256 of the steps' canonical JSON (none and an empty list are the same)."""
    text = json.dumps(steps or [], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def release_steps(directory: str) -> list[dict[str, Any]]:
    """The pull steps `prefect deploy` stores from prefect.yaml for `directory`."""
    return [{SET_WORKING_DIRECTORY: {"directory": directory}}]


def step_names(steps: list[dict[str, Any]] | None) -> list[str]:
    return [name for step in steps or [] for name in step]


@dataclass(frozen=True)
class RunGuard:
    """The release's flows (name → entrypoint) and its project directory."""

    entrypoints: Mapping[str, str]
    directory: str

    @cached_property
    def accepted_digests(self) -> frozenset[str]:
        """Computed once per guard (the worker asks for every run it takes)."""
        return frozenset({steps_digest([]), steps_digest(release_steps(self.directory))})

    def refusal(
        self, flow_name: str, entrypoint: str | None, pull_steps: list[dict[str, Any]] | None
    ) -> str | None:
        """Why a run of this deployment is refused, or None when it is the release's."""
        expected = self.entrypoints.get(flow_name)
        if expected is None:
            return (
                f"flow {flow_name!r} is not one this release runs "
                f"(allowed: {', '.join(sorted(self.entrypoints))})"
            )
        if entrypoint != expected:
            return (
                f"the deployment's entrypoint {entrypoint!r} is not the release's "
                f"{expected!r} for flow {flow_name!r}"
            )
        digest = steps_digest(pull_steps)
        if digest not in self.accepted_digests:
            return (
                f"the deployment's pull steps {step_names(pull_steps)} (sha256 {digest[:12]}) "
                f"are not the release's (none, or {SET_WORKING_DIRECTORY} to "
                f"{self.directory!r}): a deployment may not run code on the hosts"
            )
        return None

    def entrypoint(self, flow_name: str) -> str:
        return self.entrypoints[flow_name]


class RunRefused(Exception):
    """A run whose deployment is not one of the release's."""


def guard_from(allowed_flows: Mapping[str, str], project_dir: str | None) -> RunGuard:
    """The guard of `worker.allowed_flows`, its directory `worker.project_dir`, else the
    IMG2IMG_PROJECT_DIR environment variable, else the working directory."""
    import os

    directory = project_dir or os.environ.get("IMG2IMG_PROJECT_DIR") or os.getcwd()
    return RunGuard(dict(allowed_flows), directory)

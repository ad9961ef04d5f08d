"""The warm worker's run guard (pure): only the release's flows, entrypoints and pull steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments.worker.run_guard import (
    SET_WORKING_DIRECTORY,
    RunGuard,
    guard_from,
    release_steps,
    steps_digest,
)
from img2img.config.worker import RELEASE_FLOWS, WorkerSettings

GUARD = RunGuard(RELEASE_FLOWS, "/var/lib/img2img")


def test_the_release_flows_run_with_no_pull_steps_or_the_releases() -> None:
    for name, entrypoint in RELEASE_FLOWS.items():
        assert GUARD.refusal(name, entrypoint, None) is None
        assert GUARD.refusal(name, entrypoint, []) is None
        assert GUARD.refusal(name, entrypoint, release_steps("/var/lib/img2img")) is None


def test_another_flow_entrypoint_or_step_is_refused_with_the_reason() -> None:
    pipeline = RELEASE_FLOWS["img2img-pipeline"]
    assert "flow 'x' is not one this release runs" in (GUARD.refusal("x", pipeline, None) or "")
    assert "entrypoint 'os:system'" in (GUARD.refusal("img2img-pipeline", "os:system", None) or "")
    shell = [{"prefect.deployments.steps.run_shell_script": {"script": "id"}}]
    reason = GUARD.refusal("img2img-pipeline", pipeline, shell) or ""
    assert "['prefect.deployments.steps.run_shell_script']" in reason
    # The release's own step, to another directory, or with one step more: refused.
    elsewhere = release_steps("/tmp")
    assert GUARD.refusal("img2img-pipeline", pipeline, elsewhere) is not None
    assert GUARD.refusal("img2img-pipeline", pipeline, release_steps("/var/lib/img2img") + shell)


def test_the_digest_is_of_the_canonical_steps() -> None:
    a = [{SET_WORKING_DIRECTORY: {"directory": "/d", "x": 1}}]
    b = [{SET_WORKING_DIRECTORY: {"x": 1, "directory": "/d"}}]
    assert steps_digest(a) == steps_digest(b) != steps_digest(release_steps("/d"))
    assert steps_digest(None) == steps_digest([])


def test_the_allow_list_is_prefect_yamls_warm_pool_deployments() -> None:
    """What the worker allows is exactly what prefect.yaml deploys on the warm pools, with
    the pull steps it stores (its one step, to IMG2IMG_PROJECT_DIR)."""
    import importlib

    spec = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    warm = {"inf2", "inf2-generate", "inf2-upscale"}
    deployed = {}
    for d in spec["deployments"]:
        if d["work_pool"]["name"] in warm:
            module, attr = d["entrypoint"].rsplit(".", 1)
            flow = getattr(importlib.import_module(module), attr)
            deployed[flow.name] = d["entrypoint"]
    assert deployed == RELEASE_FLOWS == WorkerSettings().allowed_flows
    assert spec["pull"] == release_steps("{{ $IMG2IMG_PROJECT_DIR }}")


def test_the_guards_directory_is_the_setting_else_the_environment_else_the_cwd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMG2IMG_PROJECT_DIR", "/from/env")
    assert guard_from(RELEASE_FLOWS, "/set").directory == "/set"
    assert guard_from(RELEASE_FLOWS, None).directory == "/from/env"
    monkeypatch.delenv("IMG2IMG_PROJECT_DIR")
    assert guard_from(RELEASE_FLOWS, None).directory == str(Path.cwd())

"""The autoscaler's `local` scale target is plugged in by the local stack through the
`img2img.scale_targets` entry point: the control host's composition root finds it by name
without importing the development stack, and an unknown name is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.services.autoscalers import build_target, plugged_target
from img2img.config.settings import Settings
from infra.local.env import stack_beside


def settings_in(tmp_path: Path) -> Settings:
    settings = Settings(topology="split")
    settings.local = stack_beside(settings.local, tmp_path / "stack", 0)
    return settings


def test_the_local_target_is_found_through_its_entry_point(tmp_path: Path) -> None:
    from infra.local.scaling import LocalTarget

    settings = settings_in(tmp_path)
    assert settings.autoscaler.target == "local"
    backend = build_target(settings, "inf2-upscale")
    assert isinstance(backend, LocalTarget)
    assert backend.name == "local" and backend.pool == "inf2-upscale"
    assert backend.stack.state == (tmp_path / "stack").resolve()
    assert backend.current() == 0  # no worker runs in a fresh state folder


def test_an_unregistered_backend_is_refused_with_the_registered_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'fargate' is not a registered .*\['local'\]"):
        plugged_target("fargate", settings_in(tmp_path), None)

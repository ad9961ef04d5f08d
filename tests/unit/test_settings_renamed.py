"""Settings that moved keep working under their old environment variable, with a warning
that names the new one; the new name wins when both are set."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from img2img.config.renamed import RENAMED, env_name, move_renamed
from img2img.config.settings import Settings


def test_an_old_variable_sets_the_new_field_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IMG2IMG_STAGES__SIMULATED_IMG2IMG_MS", "20")
    monkeypatch.setenv("IMG2IMG_DISPATCH__CRASH_FLAG", "/tmp/flag")
    with caplog.at_level(logging.WARNING, logger="img2img.settings"):
        settings = Settings()
    assert settings.stages.simulated.generate_ms == 20.0
    assert settings.faults.dispatcher_crash_flag == Path("/tmp/flag")
    said = caplog.text
    assert "IMG2IMG_STAGES__SIMULATED_IMG2IMG_MS was renamed" in said
    assert "IMG2IMG_STAGES__SIMULATED__GENERATE_MS" in said
    assert "IMG2IMG_FAULTS__DISPATCHER_CRASH_FLAG" in said


def test_the_new_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMG2IMG_STAGES__SIMULATED_UPSCALE_MS", "20")
    monkeypatch.setenv("IMG2IMG_STAGES__SIMULATED__UPSCALE_MS", "7")
    assert Settings().stages.simulated.upscale_ms == 7.0


def test_moving_keeps_what_is_beside_and_reports_each_move() -> None:
    data = {
        "stages": {"simulated_load_s": "1", "backend": "simulated"},
        "dispatch": {"crash_flag": "/f", "max_batch": "3"},
    }
    warnings = move_renamed(data)
    assert data == {
        "stages": {"backend": "simulated", "simulated": {"load_s": "1"}},
        "dispatch": {"max_batch": "3"},
        "faults": {"dispatcher_crash_flag": "/f"},
    }
    assert len(warnings) == 2 and all("renamed" in w for w in warnings)
    assert move_renamed({"stages": {"backend": "eager"}}) == []


def test_every_new_place_is_a_field_of_the_settings() -> None:
    for old, new in RENAMED.items():
        model: object = Settings
        for part in new:
            fields = model.model_fields  # type: ignore[attr-defined]
            assert part in fields, (env_name(old), env_name(new))
            model = fields[part].annotation
        first = Settings.model_fields[old[0]].annotation
        assert old[-1] not in first.model_fields, f"{env_name(old)} is still a field"  # type: ignore[union-attr]


def test_a_renamed_value_is_read_under_its_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMG2IMG_WORKER__STAGES", '["img2img", "upscale"]')
    assert Settings().worker.stages == ["generate", "upscale"]
    monkeypatch.setenv("IMG2IMG_AUTOSCALER__BACKEND", "local")
    monkeypatch.setenv("IMG2IMG_WORKER__STAGES", '["upscale"]')
    settings = Settings()
    assert settings.worker.stages == ["upscale"] and settings.autoscaler.target == "local"

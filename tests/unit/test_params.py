from __future__ import annotations

import os

import pytest

from img2img.errors import InvalidParameters
from img2img.intake.params import ImageParams, params_from_metadata

DEFAULTS = ImageParams(prompt="default prompt", steps=20)


def test_no_metadata_gives_the_defaults() -> None:
    assert params_from_metadata({}, DEFAULTS) == DEFAULTS
    assert params_from_metadata({"app-user": "42"}, DEFAULTS) == DEFAULTS


def test_metadata_overrides_and_is_url_decoded() -> None:
    params = params_from_metadata(
        {
            "prompt": "caf%C3%A9 at night",
            "Strength": "0.3",
            "steps": "12",
            "seed": "7",
            "negative-prompt": "blurry",
            "guidance": "5",
            "upscale-steps": "3",
        },
        DEFAULTS,
    )
    assert params.prompt == "café at night"
    assert (params.strength, params.steps, params.seed, params.guidance) == (0.3, 12, 7, 5.0)
    assert params.negative_prompt == "blurry" and params.upscale_steps == 3


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {"strength": "1.3"},
            "metadata 'strength': Input should be less than or equal to 1 but is '1.3'",
        ),
        ({"strength": "0"}, "metadata 'strength'"),
        ({"steps": "many"}, "metadata 'steps'"),
        ({"steps": "500"}, "less than or equal to 150 but is '500'"),
        ({"seed": "-1"}, "metadata 'seed'"),
        ({"prompt": "x" * 1001}, "metadata 'prompt'"),
        ({"guidance": "30.5"}, "metadata 'guidance': Input should be less than or equal to 30"),
        ({"guidance": "-0.1"}, "metadata 'guidance': Input should be greater than or equal to 0"),
        ({"upscale-steps": "0"}, "metadata 'upscale-steps': Input should be greater than or"),
        ({"upscale-steps": "151"}, "metadata 'upscale-steps': Input should be less than or"),
        ({"seed": str(2**32)}, "less than or equal to 4294967295 but is '4294967296'"),
        ({"negative-prompt": "x" * 1001}, "metadata 'negative-prompt': String should have at"),
    ],
)
def test_out_of_range_values_name_the_key_and_the_value(metadata: dict, message: str) -> None:
    with pytest.raises(InvalidParameters) as info:
        params_from_metadata(metadata, DEFAULTS)
    assert message in str(info.value)


def test_the_bounds_themselves_are_accepted() -> None:
    low = params_from_metadata(
        {"guidance": "0", "upscale-steps": "1", "seed": "0", "steps": "2", "strength": "0.5"},
        DEFAULTS,
    )
    assert (low.guidance, low.upscale_steps, low.seed) == (0.0, 1, 0)
    high = params_from_metadata(
        {
            "guidance": "30",
            "upscale-steps": "150",
            "seed": str(2**32 - 1),
            "negative-prompt": "n" * 1000,
            "prompt": "p" * 1000,
        },
        DEFAULTS,
    )
    assert (high.guidance, high.upscale_steps, high.seed) == (30.0, 150, 2**32 - 1)
    assert len(high.negative_prompt) == 1000 and len(high.prompt) == 1000


def test_seed_is_stable_per_upload_and_differs_between_uploads() -> None:
    """The same upload gets the same seed in any process (a re-run on another host gives
    the same image), so it cannot come from Python's per-process string hashing."""
    import subprocess
    import sys

    params = ImageParams()
    here = params.seed_for("b/k@e1")
    code = "from img2img.intake.params import ImageParams; print(ImageParams().seed_for('b/k@e1'))"
    for hash_seed in ("1", "2"):
        elsewhere = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        assert int(elsewhere) == here
    assert 0 <= here < 2**32
    assert here != params.seed_for("b/k@e2")
    assert ImageParams(seed=5).seed_for("anything") == 5


def test_steps_times_strength_below_one_step_is_refused_where_parameters_are_read() -> None:
    from img2img.errors import InvalidParameters
    from img2img.intake.params import params_from_metadata

    with pytest.raises(InvalidParameters, match=r"steps × strength must be at least 1 .* 2 × 0.3"):
        params_from_metadata({"steps": "2", "strength": "0.3"}, DEFAULTS)


def test_a_refusal_names_every_bad_key_once_each_and_cuts_long_values() -> None:
    with pytest.raises(InvalidParameters) as both:
        params_from_metadata({"steps": "500", "guidance": "99"}, DEFAULTS)
    assert str(both.value) == (
        "metadata 'steps': Input should be less than or equal to 150 but is '500'; "
        "metadata 'guidance': Input should be less than or equal to 30 but is '99'"
    )
    with pytest.raises(InvalidParameters) as long:
        params_from_metadata({"prompt": "y" * 1500}, DEFAULTS)
    assert str(long.value) == (
        f"metadata 'prompt': String should have at most 1000 characters but is '{'y' * 60}'"
    )
    # A rule across fields says so in its own words, without pydantic's prefix.
    with pytest.raises(InvalidParameters) as rule:
        params_from_metadata({"steps": "2", "strength": "0.3"}, DEFAULTS)
    assert str(rule.value) == "steps × strength must be at least 1 denoising step, but is 2 × 0.3"


def test_a_derived_seed_never_changes_between_releases() -> None:
    """A re-run after an upgrade must give the same image: the seed derived from an upload's
    identity is pinned (first 4 bytes of its SHA-256, big-endian)."""
    assert ImageParams().seed_for("uploads/a/cat.png@v1") == 3361771547

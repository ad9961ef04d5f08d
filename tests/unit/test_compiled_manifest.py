"""Manifest checks, static-shape arithmetic and Neuron core groups (pure logic)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from img2img.errors import InvalidParameters, ModelLoadError
from img2img.models.compiled.compilers import visible_core_count
from img2img.models.compiled.manifest import Manifest, PartRecord, check_manifest, soft_differences
from img2img.models.compiled.parts import Shapes, check_compile_shape

VERSIONS = {
    "torch": "2.13.0+cpu",
    "diffusers": "0.42.1",
    "transformers": "5.23.0",
    "torch-neuronx": "absent",
    "neuronx-cc": "absent",
    "img2img": "0.1.0",
}


def manifest(**changes: object) -> Manifest:
    fields: dict[str, object] = dict(
        stage="generate",
        backend="torchscript",
        source_model="tiny",
        source_revision="r",
        height=64,
        width=64,
        batch=1,
        guidance=True,
        unet_cores=1,
        dtype="float32",
        versions=dict(VERSIONS),
        created_at="2026-11-23T00:00:00+00:00",
        parts={"unet": PartRecord("unet.pt", "0" * 64, 10, {"sample": [2, 4, 16, 16]}, [], 0.1)},
    )
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def check(m: Manifest, **kw: object) -> list[str]:
    args: dict[str, object] = dict(
        stage="generate",
        backend="torchscript",
        height=64,
        width=64,
        dtype="float32",
        versions=VERSIONS,
    )
    args.update(kw)
    return check_manifest(m, **args)  # type: ignore[arg-type]


def test_a_matching_manifest_has_no_problems_and_round_trips() -> None:
    m = manifest()
    assert check(m) == []
    assert Manifest.from_json(m.to_json(), "x") == m


def test_shape_mismatch_names_both_shapes() -> None:
    (problem,) = check(manifest(height=64, width=96), height=64, width=64)
    assert "96x64" in problem and "64x64" in problem


def test_every_mismatch_is_reported_at_once() -> None:
    problems = check(manifest(stage="upscale", backend="neuron", dtype="bfloat16"))
    text = " | ".join(problems)
    assert "'upscale'" in text and "'neuron'" in text and "bfloat16" in text
    # A neuron artifact also needs the Neuron runtime and compiler it was built with.
    assert "torch-neuronx" not in text  # both absent: equal


def test_torch_release_must_match_but_local_build_tags_do_not_matter() -> None:
    built = dict(VERSIONS, torch="2.13.1")
    assert check(manifest(versions=built)) == []
    (problem,) = check(manifest(versions=dict(VERSIONS, torch="2.8.0")))
    assert "torch 2.8.0" in problem and "2.13.0+cpu" in problem


def test_neuron_artifacts_need_the_exact_neuron_runtime() -> None:
    built = dict(VERSIONS, **{"torch-neuronx": "2.8.0.2.10", "neuronx-cc": "2.21.1"})
    problems = check(manifest(backend="neuron", versions=built), backend="neuron")
    assert any("torch-neuronx 2.8.0.2.10" in p and "absent" in p for p in problems)
    assert any("neuronx-cc" in p for p in problems)


def test_diffusers_difference_is_only_a_note() -> None:
    m = manifest(versions=dict(VERSIONS, diffusers="0.35.2"))
    assert check(m) == []
    assert soft_differences(m, VERSIONS) == ["diffusers 0.35.2 at compile, 0.42.1 here"]


def test_garbage_manifest_is_a_clear_load_error() -> None:
    with pytest.raises(ModelLoadError, match="not a valid img2img compile manifest"):
        Manifest.from_json('{"stage": "img2img"}', "s3://b/manifest.json")


def test_unet_batch_splits_over_cores() -> None:
    shapes = Shapes("generate", 512, 512, 1, True, 2, 8, 4, 4, 77, 768)
    assert shapes.unet_call_batch == 2 and shapes.unet_batch == 1
    assert shapes.inputs("unet")["sample"] == (1, 4, 64, 64)
    assert shapes.inputs("vae_encoder")["image"] == (1, 3, 512, 512)
    up = Shapes("upscale", 128, 128, 1, True, 1, 4, 4, 7, 77, 1024)
    assert up.inputs("unet")["sample"] == (2, 7, 128, 128)  # the upscaler denoises at input size
    assert up.inputs("vae_decoder")["latents"] == (1, 4, 128, 128)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("generate", 60, 64, 1, True, 1, 8), "height must be a positive multiple of 8"),
        (("generate", 64, 64, 0, True, 1, 8), "batch must be at least 1"),
        (("generate", 64, 64, 1, False, 2, 8), "does not split evenly over 2 cores"),
    ],
)
def test_impossible_compile_shapes_are_refused(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidParameters, match=message):
        check_compile_shape(*args)


def test_visible_core_count() -> None:
    assert visible_core_count("0-1") == 2
    assert visible_core_count("3") == 1
    assert visible_core_count("0,2-4") == 4
    assert visible_core_count("") is None


def test_batch_must_match_the_images_per_call() -> None:
    (problem,) = check(manifest(batch=2), batch=1)
    assert "2 image(s) per call" in problem and "runs 1" in problem
    assert check(manifest(batch=2), batch=2) == []
    assert check(manifest(batch=2)) == []  # any size: the caller runs what it was compiled for


def test_sizes_are_parsed_chosen_and_refused_by_name() -> None:
    from img2img.models.compiled.sizes import choose_sizes, parse_batches, size_folder

    assert parse_batches("4,1,2,4") == [1, 2, 4]
    assert parse_batches("8") == [8]
    for bad in ("", "0,2", "two"):
        with pytest.raises(InvalidParameters, match="--batch"):
            parse_batches(bad)
    assert choose_sizes([1, 2, 4], None, "X") == [1, 2, 4]
    assert choose_sizes([1, 2, 4], [4, 8], "X") == [4]
    with pytest.raises(ModelLoadError, match=r"hold batch sizes \[1, 2\].*asks for \[8\]"):
        choose_sizes([1, 2], [8], "s3://m/x")
    assert size_folder("s3://m/x/", 4) == "s3://m/x/batch-4"


def test_a_manifest_written_before_the_stage_rename_reads_as_generate() -> None:
    old = json.loads(manifest().to_json())
    old["stage"] = "img2img"
    read = Manifest.from_json(json.dumps(old), "s3://b/manifest.json")
    assert read.stage == "generate" and check(read) == []
    old["stage"] = "upscale"
    assert Manifest.from_json(json.dumps(old), "s3://b/manifest.json").stage == "upscale"

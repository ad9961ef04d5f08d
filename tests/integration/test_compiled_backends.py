"""Compiled stages on the torchscript backend: the Neuron wrappers, manifest, shape checks and
artifact cache, run for real on tiny models (Neuron hardware is the only thing absent)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main as cli
from img2img.config.stages import StageSettings
from img2img.dev.tiny import build_tiny_img2img, build_tiny_upscale
from img2img.errors import InvalidParameters, ModelLoadError
from img2img.models.compiled.cache import fetch_artifacts
from img2img.models.compiled.compile import CompileRequest, compile_stage
from img2img.models.compiled.compilers import NEURON_INSTALL, get_backend
from img2img.models.registry import load as load_pipeline
from tests.conftest import AwsEnv

# Traced graphs run the same kernels as eager; only op fusion order may differ.
TOLERANCE = 1e-4


def tiny_request(stage: str, out: str, **kw: Any) -> CompileRequest:
    """Compile the tiny model of `stage` at 64×64, batch 1, for torchscript unless told."""
    args: dict[str, Any] = dict(
        stage=stage, model="tiny", height=64, width=64, batch=1, backend="torchscript", out=out
    )
    args.update(kw)
    return CompileRequest(**args)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compiled")
    out = {}
    for stage in ("generate", "upscale"):
        out[stage] = root / stage
        compile_stage(tiny_request(stage, str(out[stage])))
    out["img2img-2cores"] = root / "img2img-2cores"
    compile_stage(tiny_request("generate", str(out["img2img-2cores"]), cores=2))
    return out


def settings_for(compiled: dict[str, Path], tmp_path: Path, **kw: Any) -> StageSettings:
    args: dict[str, Any] = dict(
        backend="torchscript",
        generate_artifacts=str(compiled["generate"]),
        upscale_artifacts=str(compiled["upscale"]),
        model_cache_dir=tmp_path / "cache",
    )
    args.update(kw)
    return StageSettings(**args)


def run(pipe: Any, stage: str, guidance: float = 7.5) -> np.ndarray:
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8))
    kw: dict[str, Any] = dict(
        prompt="a lighthouse",
        negative_prompt="blur",
        image=image,
        num_inference_steps=4,
        guidance_scale=guidance,
        output_type="np",
        generator=torch.Generator().manual_seed(3),
    )
    if stage == "generate":
        kw["strength"] = 0.75
    out: np.ndarray = pipe(**kw).images
    return out


@pytest.mark.parametrize("stage", ["generate", "upscale"])
def test_torchscript_matches_eager(stage: str, compiled: dict[str, Path], tmp_path: Path) -> None:
    eager = build_tiny_img2img() if stage == "generate" else build_tiny_upscale()
    eager.set_progress_bar_config(disable=True)
    traced = load_pipeline(stage, settings_for(compiled, tmp_path))  # type: ignore[arg-type]
    want, got = run(eager, stage), run(traced, stage)
    assert got.shape == want.shape == ((1, 64, 64, 3) if stage == "generate" else (1, 256, 256, 3))
    assert float(np.abs(got - want).max()) < TOLERANCE
    assert float(want.std()) > 0.01  # a real image of noise, not a constant


def test_unet_split_over_two_cores_matches_eager(compiled: dict[str, Path], tmp_path: Path) -> None:
    manifest = json.loads((compiled["img2img-2cores"] / "manifest.json").read_text())
    assert manifest["unet_cores"] == 2 and manifest["parts"]["unet"]["inputs"]["sample"][0] == 1
    eager = build_tiny_img2img()
    eager.set_progress_bar_config(disable=True)
    split = load_pipeline(
        "generate",
        settings_for(compiled, tmp_path, generate_artifacts=str(compiled["img2img-2cores"])),
    )
    assert float(np.abs(run(split, "generate") - run(eager, "generate")).max()) < TOLERANCE


def test_manifest_records_what_was_compiled(compiled: dict[str, Path]) -> None:
    manifest = json.loads((compiled["upscale"] / "manifest.json").read_text())
    assert set(manifest["parts"]) == {"text_encoder", "unet", "vae_decoder"}
    assert manifest["parts"]["unet"]["inputs"]["class_labels"] == [2]
    assert manifest["guidance"] is True and manifest["dtype"] == "float32"
    assert manifest["versions"]["torch"] == torch.__version__
    assert all(len(p["sha256"]) == 64 for p in manifest["parts"].values())


def test_settings_at_another_shape_are_refused(compiled: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_pipeline("generate", settings_for(compiled, tmp_path, height=32))
    assert "compiled for 64x64" in str(err.value) and "give 64x32" in str(err.value)


def test_an_input_at_another_shape_is_refused_naming_both(
    compiled: dict[str, Path], tmp_path: Path
) -> None:
    pipe = load_pipeline("generate", settings_for(compiled, tmp_path))
    # Compiled with guidance on: a guidance-off call would run the UNet at half the batch.
    with pytest.raises(InvalidParameters) as err:
        run(pipe, "generate", guidance=1.0)
    assert "[2, 4, 16, 16]" in str(err.value) and "[1, 4, 16, 16]" in str(err.value)
    big = Image.new("RGB", (96, 64))
    with pytest.raises(
        InvalidParameters, match=r"VAE encoder takes image of shape \[1, 3, 64, 64\]"
    ):
        pipe(prompt="x", image=big, num_inference_steps=2, strength=0.5, output_type="np")


def test_version_mismatch_and_damage_are_clear_errors(
    compiled: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(compiled["generate"], copy)
    path = copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["versions"]["torch"] = "2.8.0"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"compiled with torch 2\.8\.0, installed is"):
        load_pipeline("generate", settings_for(compiled, tmp_path, generate_artifacts=str(copy)))
    raw["versions"]["torch"] = torch.__version__
    path.write_text(json.dumps(raw))
    with (copy / "unet.pt").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(ModelLoadError, match=r"unet\.pt \(unet\) has a different SHA-256"):
        load_pipeline("generate", settings_for(compiled, tmp_path, generate_artifacts=str(copy)))


def test_compile_refuses_to_overwrite(compiled: dict[str, Path]) -> None:
    with pytest.raises(InvalidParameters, match="already holds compiled artifacts"):
        compile_stage(tiny_request("generate", str(compiled["generate"])))


def test_compile_upload_and_load_on_a_fresh_host(
    aws: AwsEnv,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clients, settings = aws
    bucket = settings.storage.results_bucket
    uri = f"s3://{bucket}/models/upscale/v1"
    compile_argv = ["compile", "--stage", "upscale", "--model", "tiny", "--height", "64"]
    compile_argv += ["--width", "64", "--backend", "torchscript", "--out", uri]
    code = cli(compile_argv)
    assert code == 0
    progress = capsys.readouterr().err
    assert "[2/3] unet: done in" in progress and "manifest.json" in progress
    listed = clients.s3.list_objects_v2(Bucket=bucket, Prefix="models/upscale/v1/")
    assert {"manifest.json", "unet.pt"} <= {o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]}

    # A new host: an empty cache. Two slots start at once; exactly one downloads.
    cache = tmp_path / "fresh-host"
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch_artifacts(uri, cache, clients.s3)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2 and results[0].folder == results[1].folder
    assert sorted(r.downloaded for r in results) == [False, True]

    # `img2img prefetch`, as a host (or a warm-pool instance) runs it before its worker.
    monkeypatch.setenv("IMG2IMG_STAGES__UPSCALE_ARTIFACTS", uri)
    monkeypatch.setenv("IMG2IMG_STAGES__MODEL_CACHE_DIR", str(tmp_path / "prefetched"))
    assert cli(["prefetch"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert line["stage"] == "upscale" and line["downloaded"] is True and line["mb"] > 0
    assert (Path(line["folder"]) / "manifest.json").exists()
    assert cli(["prefetch"]) == 0  # a second time: already on disk
    assert '"downloaded": false' in capsys.readouterr().out

    st = settings.stages.model_copy(
        update={"backend": "torchscript", "upscale_artifacts": uri, "model_cache_dir": cache}
    )
    pipe = load_pipeline("upscale", st, clients.s3)
    assert run(pipe, "upscale").shape == (1, 256, 256, 3)
    # The same prefix cannot be compiled over: the cache keys on the manifest.
    assert cli(compile_argv) == 2
    assert "already holds compiled artifacts" in capsys.readouterr().err


def test_neuron_without_artifacts_says_what_to_do(tmp_path: Path) -> None:
    st = StageSettings(backend="neuron", model_cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="IMG2IMG_STAGES__GENERATE_ARTIFACTS"):
        load_pipeline("generate", st)


def test_missing_torch_neuronx_names_the_install_step() -> None:
    try:
        import torch_neuronx  # noqa: F401
    except ImportError:
        with pytest.raises(ModelLoadError) as err:
            get_backend("neuron")
        assert (
            str(err.value) == NEURON_INSTALL and "pip.repos.neuron.amazonaws.com" in NEURON_INSTALL
        )
    else:
        pytest.skip("torch_neuronx is installed: the missing-install error cannot occur")


def test_neuron_compile_and_load_match_torchscript(tmp_path: Path) -> None:
    pytest.importorskip("torch_neuronx", reason="needs torch-neuronx on an Inf2/Trn1 host")
    for stage in ("generate", "upscale"):
        for backend in ("torchscript", "neuron"):
            compile_stage(tiny_request(stage, str(tmp_path / backend / stage), backend=backend))
        outs = [
            run(
                load_pipeline(
                    stage,
                    StageSettings(
                        backend=b,
                        generate_artifacts=str(tmp_path / b / stage),
                        upscale_artifacts=str(tmp_path / b / stage),
                        model_cache_dir=tmp_path / "c",
                    ),
                ),
                stage,
            )
            for b in ("torchscript", "neuron")
        ]
        # Neuron auto-casts matmuls to bf16: a looser bound than torchscript's.
        assert float(np.abs(outs[0] - outs[1]).max()) < 0.05


@pytest.mark.usefixtures("prefect_api")
def test_compile_flow_publishes_parts_to_s3_and_the_ui(aws: AwsEnv) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.compile import compile_model

    clients, settings = aws
    uri = f"s3://{settings.storage.results_bucket}/models/generate/flow"
    state = compile_model(
        stage="generate",
        model="tiny",
        height=64,
        width=64,
        out=uri,
        backend="torchscript",
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert state.result() == "tiny-random-seed0"
    keys = clients.s3.list_objects_v2(
        Bucket=settings.storage.results_bucket, Prefix="models/generate/flow/"
    )["Contents"]
    assert "models/generate/flow/manifest.json" in {k["Key"] for k in keys}
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["img2img-compile"]))
        )
    mine = [a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id]
    rows: Any = json.loads(mine[0].data) if isinstance(mine[0].data, str) else mine[0].data
    assert [r["part"] for r in rows] == ["text_encoder", "unet", "vae_encoder", "vae_decoder"]
    assert rows[1]["inputs"].startswith("sample=[2, 4, 16, 16]")


def test_the_neuron_attention_graph_traces_and_matches_eager(tmp_path: Path) -> None:
    """The neuron backend traces attention as explicit matmuls (the recipe's form); trace that
    graph with torchscript here so what Inf2 compiles is checked against eager in CI."""
    from img2img.models.compiled.compile import compile_pipeline
    from img2img.models.compiled.parts import use_plain_attention

    source = build_tiny_upscale()
    use_plain_attention(source)
    out = tmp_path / "plain"
    request = tiny_request("upscale", str(out))
    compile_pipeline(source, request, revision="tiny-plain-attention")
    traced = load_pipeline(
        "upscale",
        StageSettings(
            backend="torchscript", upscale_artifacts=str(out), model_cache_dir=tmp_path / "cache"
        ),
    )
    eager = build_tiny_upscale()
    eager.set_progress_bar_config(disable=True)
    assert float(np.abs(run(traced, "upscale") - run(eager, "upscale")).max()) < TOLERANCE


def test_arguments_the_graph_cannot_take_are_refused(
    compiled: dict[str, Path], tmp_path: Path
) -> None:
    pipe = load_pipeline("generate", settings_for(compiled, tmp_path)).pipes[1]  # batch 1
    sample, context = torch.zeros(2, 4, 16, 16), torch.zeros(2, 77, 32)
    assert pipe.unet(sample, 10, context, return_dict=False)[0].shape == (2, 4, 16, 16)
    with pytest.raises(InvalidParameters, match="UNet cannot take cross_attention_kwargs"):
        pipe.unet(sample, 10, context, cross_attention_kwargs={"scale": 0.5})
    with pytest.raises(InvalidParameters, match="text encoder cannot take attention_mask"):
        pipe.text_encoder(torch.zeros(1, 77, dtype=torch.long), attention_mask=torch.ones(1, 77))

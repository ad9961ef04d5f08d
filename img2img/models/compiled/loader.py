"""Loading a stage from compiled artifacts: fetch, check the manifest, load the parts.

This is the one entry point `img2img.models.loaded` calls for the `torchscript` and `neuron`
backends. With no artifacts configured, the torchscript backend compiles the stage's model
once into the model cache (the embedded default needs no extra step); the neuron backend
refuses, because a Neuron compile takes tens of minutes and belongs on a compile host.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img2img.config.stages import StageSettings
from img2img.errors import ModelLoadError
from img2img.models.buildonce import build_once
from img2img.models.compiled.cache import fetch_artifacts
from img2img.models.compiled.compile import compile_stage
from img2img.models.compiled.compilers import get_backend
from img2img.models.compiled.manifest import (
    MANIFEST,
    check_manifest,
    installed_versions,
    read_manifest,
    soft_differences,
    verify_files,
)
from img2img.models.compiled.parts import Shapes, StageKind
from img2img.models.compiled.request import CompileRequest
from img2img.models.compiled.runtime import assemble_pipeline
from img2img.models.compiled.sizes import CompiledSizes, artifact_locations, choose_sizes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


def artifacts_source(kind: StageKind, settings: StageSettings) -> str | None:
    return settings.generate_artifacts if kind == "generate" else settings.upscale_artifacts


def load_compiled(
    kind: StageKind, settings: StageSettings, s3: S3Client | None, batch: int | None = None
) -> CompiledSizes:
    """The pipeline of `kind` on compiled parts at every batch size its artifacts hold (or
    those of `stages.compiled_batches`), each checked against `settings`; with `batch`, the
    artifacts must hold that size. Called like a diffusers pipeline: a call of n images
    runs on the graphs compiled for n."""
    source = artifacts_source(kind, settings)
    folders: dict[int, tuple[Path, bool, str]] = {}
    if source is None:
        for size, folder in _compile_default(kind, settings, s3).items():
            folders[size] = (folder, True, str(folder))
    else:
        wanted = settings.compiled_batches
        for listed, where in artifact_locations(source, s3, wanted):
            fetched = fetch_artifacts(where, settings.model_cache_dir, s3)
            # A single artifact runs the size it was compiled for (if that one is wanted).
            size = listed or choose_sizes([read_manifest(fetched.folder).batch], wanted, where)[0]
            folders[size] = (fetched.folder, where.startswith("s3://"), where)
    if batch is not None and batch not in folders:
        raise ModelLoadError(
            f"compiled {kind} artifacts {source or 'in the model cache'} hold batch sizes "
            f"{sorted(folders)}, the caller runs {batch}"
        )
    pipes = {
        size: _load_folder(kind, settings, folder, size, hashed, where)
        for size, (folder, hashed, where) in folders.items()
    }
    return CompiledSizes(pipes)


def _load_folder(
    kind: StageKind, settings: StageSettings, folder: Path, batch: int, hashed: bool, where: str
) -> Any:
    """One artifact folder, checked against the settings and its batch size, loaded."""
    manifest = read_manifest(folder)
    here = installed_versions()
    problems = check_manifest(
        manifest,
        stage=kind,
        backend=settings.backend,
        height=settings.height,
        width=settings.width,
        dtype=settings.dtype,
        versions=here,
        batch=batch,
    )
    if problems:
        raise ModelLoadError(
            f"compiled {kind} artifacts {where} do not fit: " + "; ".join(problems)
        )
    for note in soft_differences(manifest, here):
        log.warning(
            "compiled %s artifacts: %s (only the untraced pipeline code differs)", kind, note
        )
    # Cache folders were hashed when they were fetched or built; a plain folder is hashed now.
    verify_files(folder, manifest, hash_files=not hashed)
    backend = get_backend(settings.backend, settings.device)
    start = time.perf_counter()
    runners = {
        part: backend.load(folder / rec.file, part, manifest.unet_cores)  # type: ignore[arg-type]
        for part, rec in manifest.parts.items()
    }
    log.info(
        "loaded %d compiled %s parts (%s, batch %d) in %.1f s",
        len(runners),
        kind,
        settings.backend,
        batch,
        time.perf_counter() - start,
    )
    return assemble_pipeline(folder, manifest, Shapes(**manifest.shapes), runners, settings.device)


def _compile_default(
    kind: StageKind, settings: StageSettings, s3: S3Client | None
) -> dict[int, Path]:
    """Compile the stage's configured model for torchscript once per cache (not for neuron),
    at each size of `stages.compiled_batches` (1 when unset); returns the folder per size."""
    if settings.backend != "torchscript":
        env = f"IMG2IMG_STAGES__{kind.upper()}_ARTIFACTS"
        raise ModelLoadError(
            f"stages.backend is {settings.backend!r} but no compiled {kind} artifacts are set: "
            f"run `img2img compile --stage {kind} --backend {settings.backend} ...` on a compile "
            f"host and set {env} to its --out"
        )
    from img2img.models.eager import resolve_source

    model = str(resolve_source(kind, settings, s3))
    tag = hashlib.sha256(f"{model}|{settings.dtype}".encode()).hexdigest()[:12]
    folders = {}
    for size in settings.compiled_batches or [1]:
        # Batch 1 keeps the folder name it always had (caches built before stay valid).
        suffix = "" if size == 1 else f"-b{size}"
        folder = (
            settings.model_cache_dir
            / "compiled"
            / (f"torchscript-{kind}-{settings.width}x{settings.height}-{tag}{suffix}")
        )

        def fill(tmp: Path, size: int = size) -> None:
            log.info(
                "compiling %s from %s for torchscript (batch %d) into %s", kind, model, size, tmp
            )
            request = CompileRequest(
                stage=kind,
                model=model,
                height=settings.height,
                width=settings.width,
                batch=size,
                backend="torchscript",
                out=str(tmp),
                dtype=settings.dtype,
            )
            compile_stage(request, s3)

        build_once(folder, MANIFEST, fill)
        folders[size] = folder
    return folders

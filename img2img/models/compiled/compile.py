"""`img2img compile`: trace one stage's parts at a static shape and write them with a manifest.

Compiling and serving are separate steps in separate processes (the Neuron compiler needs
tens of GB of host memory and minutes per part; a serving slot only loads the result).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from img2img.aws.folders import download_prefix, split_s3_uri, upload_folder
from img2img.errors import InvalidParameters, ModelLoadError
from img2img.models.compiled.compilers import get_backend
from img2img.models.compiled.manifest import (
    MANIFEST,
    Manifest,
    PartRecord,
    installed_versions,
    sha256_of,
)
from img2img.models.compiled.parts import (
    StageKind,
    example_inputs,
    shapes_of,
    stage_part_names,
    traceable,
)
from img2img.models.compiled.request import CompileRequest
from img2img.models.compiled.runtime import save_pipeline_configs

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def load_source(
    stage: StageKind, model: str, dtype: str, s3: S3Client | None, scratch: Path
) -> tuple[Any, str]:
    """The diffusers pipeline to compile, and a revision string that identifies its weights."""
    from img2img.dev.realsize import build_random
    from img2img.models.eager import pipeline_class

    torch_dtype = getattr(torch, dtype)
    if model == "tiny" or model.startswith("random:"):
        size = "tiny" if model == "tiny" else model.removeprefix("random:")
        pipe = build_random(stage, size)
        return (pipe if dtype == "float32" else pipe.to(torch_dtype)), f"{size}-random-seed0"
    folder = Path(model)
    if model.startswith("s3://"):
        if s3 is None:
            raise ModelLoadError(f"model {model} is on S3 but no S3 client was given")
        bucket, prefix = split_s3_uri(model)
        folder = scratch / "source"
        download_prefix(s3, bucket, prefix, folder)
    if not (folder / "model_index.json").exists():
        raise ModelLoadError(f"model {model} has no model_index.json (a diffusers folder expected)")
    try:
        pipe = pipeline_class(stage).from_pretrained(str(folder), torch_dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the {stage} model from {model}: {exc}") from exc
    return pipe, _folder_revision(folder)


def _folder_revision(folder: Path) -> str:
    """SHA-256 over every file's path and bytes: the same weights give the same revision."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(sha256_of(path).encode())
    return "sha256:" + digest.hexdigest()[:16]


def compile_stage(
    req: CompileRequest, s3: S3Client | None = None, progress: Progress | None = None
) -> Manifest:
    """Load `req.model`, trace every part of `req.stage`, write artifacts and manifest to
    `req.out`."""
    (manifest,) = compile_sizes(req, [req.batch], s3, progress)
    return manifest


def compile_sizes(
    req: CompileRequest,
    batches: list[int],
    s3: S3Client | None = None,
    progress: Progress | None = None,
) -> list[Manifest]:
    """`req` at every size of `batches`, the model loaded once: one size writes its artifact
    at `req.out`; several write one per size under it (`sizes.size_folder`), then the
    `sizes.json` index last."""
    from dataclasses import replace

    from img2img.models.compiled.sizes import SIZES, size_folder, sizes_document

    say = progress or log.info
    several = len(batches) > 1
    outs = {b: size_folder(req.out, b) if several else req.out for b in batches}
    get_backend(req.backend)  # fail before the (slow) model load when the backend is missing
    for out in {req.out, *outs.values()}:
        _refuse_existing(out, s3)
    manifests = []
    with tempfile.TemporaryDirectory(prefix="img2img-compile-") as scratch_dir:
        start = time.perf_counter()
        pipe, revision = load_source(req.stage, req.model, req.dtype, s3, Path(scratch_dir))
        say(f"loaded {req.stage} model {req.model} in {time.perf_counter() - start:.1f} s")
        for batch, out in outs.items():
            if several:
                say(f"batch {batch}: compiling into {out}")
            one = replace(req, batch=batch, out=out)
            manifests.append(compile_pipeline(pipe, one, revision, s3, say))
        if several:
            index = Path(scratch_dir) / "index"
            index.mkdir()
            (index / SIZES).write_text(sizes_document(req.stage, req.backend, batches))
            _publish(index, req.out, s3, last=SIZES)
            say(f"wrote sizes {batches} and {SIZES} to {req.out}")
    return manifests


def compile_pipeline(
    pipe: Any,
    req: CompileRequest,
    revision: str,
    s3: S3Client | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Trace every part of the loaded `pipe` and publish them with a manifest to `req.out`."""
    say = progress or log.info
    if req.dtype not in ("float32", "bfloat16", "float16"):
        raise InvalidParameters(f"dtype must be float32, bfloat16 or float16 but is {req.dtype!r}")
    backend = get_backend(req.backend)
    backend.prepare(pipe)
    start = time.perf_counter()
    shapes = shapes_of(
        pipe, req.stage, req.height, req.width, req.batch, req.guidance, req.unet_cores()
    )
    with tempfile.TemporaryDirectory(prefix="img2img-compile-") as scratch_dir:
        scratch = Path(scratch_dir)
        staging = scratch / "out"
        staging.mkdir()
        names = stage_part_names(req.stage)
        parts: dict[str, PartRecord] = {}
        for i, part in enumerate(names, 1):
            inputs = example_inputs(shapes, part, getattr(torch, req.dtype))
            shown = ", ".join(f"{k}={list(v)}" for k, v in shapes.inputs(part).items())
            say(f"[{i}/{len(names)}] {part}: tracing with {req.backend} at {shown}")
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                # Shape-dependent Python branches are frozen on purpose: the shapes are static.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = backend.trace(
                    traceable(pipe, req.stage, part), inputs, part, scratch / "work"
                )
            path = staging / f"{part}.pt"
            torch.jit.save(traced, str(path))
            took = time.perf_counter() - t0
            size = path.stat().st_size
            parts[part] = PartRecord(
                file=path.name,
                sha256=sha256_of(path),
                bytes=size,
                inputs={k: list(v) for k, v in shapes.inputs(part).items()},
                compiler_args=backend.compiler_args(part),
                compile_s=round(took, 2),
            )
            say(f"[{i}/{len(names)}] {part}: done in {took:.1f} s, {size / 1e6:.1f} MB")
            del traced
        save_pipeline_configs(pipe, staging)
        manifest = Manifest(
            stage=req.stage,
            backend=req.backend,
            source_model=req.model,
            source_revision=revision,
            height=req.height,
            width=req.width,
            batch=req.batch,
            guidance=req.guidance,
            unet_cores=shapes.unet_cores,
            dtype=req.dtype,
            versions=installed_versions(),
            parts=parts,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            shapes=asdict(shapes),
        )
        (staging / MANIFEST).write_text(manifest.to_json())
        _publish(staging, req.out, s3)
    say(
        f"wrote {len(parts)} parts and {MANIFEST} to {req.out} in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return manifest


def _refuse_existing(out: str, s3: S3Client | None) -> None:
    """Artifacts are immutable: a new compile goes to a new place (caches key on the manifest)."""
    from img2img.models.compiled.sizes import SIZES

    for marker in (MANIFEST, SIZES):
        if out.startswith("s3://"):
            if s3 is None:
                raise ModelLoadError(f"--out {out} is on S3 but no S3 client was given")
            bucket, prefix = split_s3_uri(out)
            key = f"{prefix}/{marker}" if prefix else marker
            found = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0)
        else:
            found = (Path(out) / marker).exists()
        if found:
            raise InvalidParameters(f"{out} already holds compiled artifacts; choose a new --out")


def _publish(staging: Path, out: str, s3: S3Client | None, last: str = MANIFEST) -> None:
    """Put the staged folder at `out`, `last` (the manifest) last so readers never see half
    of it."""
    if out.startswith("s3://"):
        assert s3 is not None
        bucket, prefix = split_s3_uri(out)
        upload_folder(s3, staging, bucket, prefix, last=last)
        return
    dest = Path(out)
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == last)
    for path in files:  # moved, not copied: the parts are gigabytes at real size
        target = dest / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)

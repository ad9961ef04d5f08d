"""Task: compile one stage to static-shape artifacts and record each part in the UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from img2img.models.compiled.compile import compile_sizes
from img2img.models.compiled.manifest import Manifest
from img2img.models.compiled.request import CompileRequest
from tasks.runtime import get_runtime

COMPILE_KEY = "img2img-compile"


@task(name="compile-stage", cache_policy=NO_CACHE)  # compile errors are not transient
def compile_task(request: CompileRequest, batches: list[int] | None = None) -> list[Manifest]:
    """`request` at each of `batches` (None: its own batch), a row per part and size."""
    logger = get_run_logger()
    sizes = batches or [request.batch]
    manifests = compile_sizes(request, sizes, get_runtime().clients.s3, progress=logger.info)
    create_table_artifact(
        [
            {
                "batch": manifest.batch,
                "part": name,
                "compile_s": rec.compile_s,
                "mb": round(rec.bytes / 1e6, 1),
                "inputs": " ".join(f"{k}={v}" for k, v in rec.inputs.items()),
                "compiler_args": " ".join(rec.compiler_args) or "(torch.jit.trace)",
            }
            for manifest in manifests
            for name, rec in manifest.parts.items()
        ],
        key=COMPILE_KEY,
        description=f"{request.stage} compiled with {request.backend} at "
        f"{request.width}x{request.height}, batch {', '.join(map(str, sizes))}, guidance "
        f"{'on' if request.guidance else 'off'} → {request.out}",
    )
    return manifests

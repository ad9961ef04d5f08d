"""Compile a stage's model to static-shape artifacts on a compile host (the `compile`
deployment). The serving slots load the result in their own processes, never this one.

    python -m flows.compile --stage generate --model s3://models/sd15 --height 512 \\
        --width 512 --backend neuron --out s3://models/compiled/sd15-512-b1/v1
"""

from __future__ import annotations

import argparse
from typing import Literal

from prefect import flow

from img2img.models.compiled.request import (
    CompileRequest,
    add_compile_arguments,
    batches_from_args,
    request_from_args,
)
from tasks.compile import compile_task


@flow(name="img2img-compile", log_prints=False)
def compile_model(
    stage: Literal["generate", "upscale"],
    model: str,
    height: int,
    width: int,
    out: str,
    backend: Literal["neuron", "torchscript"] = "neuron",
    batch: int = 1,
    guidance: bool = True,
    cores: int | None = None,
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
    batches: list[int] | None = None,
) -> str:
    """Compile `stage` of `model` at `height` × `width` input for `backend` into `out`
    (a new folder or s3:// prefix), at `batch` images per call or at each of `batches`
    (one artifact per size under `out`); returns the source revision that was compiled."""
    request = CompileRequest(
        stage=stage,
        model=model,
        height=height,
        width=width,
        batch=batch,
        backend=backend,
        out=out,
        guidance=guidance,
        cores=cores,
        dtype=dtype,
    )
    manifests = compile_task(request, batches)
    return manifests[0].source_revision


def main() -> None:
    parser = argparse.ArgumentParser(description="Compile a stage (as `img2img compile`).")
    add_compile_arguments(parser, backend_required=False)
    args = parser.parse_args()
    request = request_from_args(args)
    compile_model(
        stage=request.stage,
        model=request.model,
        height=request.height,
        width=request.width,
        out=request.out,
        backend=args.backend,
        batch=request.batch,
        guidance=request.guidance,
        cores=request.cores,
        dtype=args.dtype,
        batches=batches_from_args(args),
    )


if __name__ == "__main__":
    main()

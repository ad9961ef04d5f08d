"""What to compile, and the compile command line shared by `img2img compile` and
`python -m flows.compile`. Plain data: importing it needs no torch (the control host's
command line loads it)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from img2img.config.stages import StageKind


@dataclass(frozen=True)
class CompileRequest:
    """What to compile. `model` is a diffusers folder, an s3:// URI, `tiny` (the random-weight
    test model) or `random:<size>` (a real architecture with random weights, see realsize)."""

    stage: StageKind
    model: str
    height: int
    width: int
    batch: int
    backend: str
    out: str
    guidance: bool = True
    cores: int | None = None  # UNet split; default 2 for neuron (the recipe), 1 for torchscript
    dtype: str = "float32"

    def unet_cores(self) -> int:
        if self.cores is not None:
            return self.cores
        call_batch = self.batch * (2 if self.guidance else 1)
        return 2 if self.backend == "neuron" and call_batch % 2 == 0 else 1


def add_compile_arguments(parser: argparse.ArgumentParser, backend_required: bool = True) -> None:
    """The compile command line, shared by `img2img compile` and `python -m flows.compile`."""
    parser.add_argument("--stage", choices=["generate", "upscale"], required=True)
    parser.add_argument(
        "--model",
        required=True,
        help="diffusers folder, s3:// URI, 'tiny' or 'random:sd15|sd21' (random weights)",
    )
    parser.add_argument("--height", type=int, required=True, help="stage input height")
    parser.add_argument("--width", type=int, required=True, help="stage input width")
    parser.add_argument(
        "--batch",
        default="1",
        help="images per call; several (1,2,4,8) compile one artifact per size under --out",
    )
    parser.add_argument(
        "--backend",
        choices=["neuron", "torchscript"],
        required=backend_required,
        default=None if backend_required else "neuron",
    )
    parser.add_argument("--out", required=True, help="new folder or s3:// prefix")
    parser.add_argument(
        "--no-guidance", action="store_true", help="compile for guidance_scale <= 1 (no CFG)"
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="NeuronCores the UNet batch splits over (default 2 for neuron, 1 for torchscript)",
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")


def batches_from_args(args: argparse.Namespace) -> list[int]:
    """The batch sizes `--batch` names (`1,4` → [1, 4])."""
    from img2img.models.compiled.sizes import parse_batches

    return parse_batches(str(args.batch))


def request_from_args(args: argparse.Namespace) -> CompileRequest:
    """The request the arguments of `add_compile_arguments` describe."""
    return CompileRequest(
        stage=args.stage,
        model=args.model,
        height=args.height,
        width=args.width,
        batch=batches_from_args(args)[0],
        backend=args.backend,
        out=args.out,
        guidance=not args.no_guidance,
        cores=args.cores,
        dtype=args.dtype,
    )

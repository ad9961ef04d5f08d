"""The two inference stages: which models, on what backend, at which shape.

Environment: `IMG2IMG_STAGES__*` (the simulated device: `IMG2IMG_STAGES__SIMULATED__*`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from img2img.config.dev import SimulatedDevice

# The one definition of what a stage's model is: stage 1, generate (diffusers img2img), or
# stage 2, upscale (the x4 upscaler).
StageKind = Literal["generate", "upscale"]


class StageSettings(BaseModel):
    """The two inference stages: which models, on what backend, at which shape."""

    backend: Literal["eager", "torchscript", "neuron", "simulated"] = Field(
        "eager",
        description="Model backend: eager diffusers on CPU or CUDA; torchscript runs artifacts "
        "traced by `img2img compile` (CPU/CUDA, what CI uses for the Neuron code path); "
        "neuron runs Neuron-compiled artifacts on the slot's NeuronCores (Inf2); simulated "
        "waits a fixed device time per call without using the CPU (benchmarks only).",
    )
    generate_artifacts: str | None = Field(
        None,
        description="Compiled stage-1 artifacts (folder or s3:// URI written by `img2img "
        "compile`) for the torchscript and neuron backends. None: torchscript compiles "
        "generate_model once into model_cache_dir; neuron refuses.",
    )
    upscale_artifacts: str | None = Field(
        None,
        description="Compiled stage-2 artifacts (folder or s3:// URI), as generate_artifacts.",
    )
    compiled_batches: list[int] | None = Field(
        None,
        description="Compiled backends: the batch sizes to load from artifacts compiled at "
        "several (`img2img compile --batch 1,4`; None: all they hold), and the sizes the "
        "torchscript backend compiles its default model at (None: 1). A call runs at one "
        "of them, padded when that is cheaper than two calls.",
    )
    device_batch: int = Field(
        4,
        ge=1,
        le=64,
        description="Most images in one device call on the eager and simulated backends "
        "(images of one run with the same steps, strength and guidance share a call). The "
        "compiled backends run the batch sizes their artifacts were compiled for.",
    )
    simulated: SimulatedDevice = Field(
        default_factory=SimulatedDevice,
        description="The simulated backend's device (development and benchmarks only).",
    )
    device: str = Field("cpu", description="torch device for the eager backend (cpu, cuda).")
    channels_last: bool = Field(
        True,
        description="On a GPU, keep the UNet's and VAE's activations channels-last (faster "
        "convolutions on tensor cores); ignored on the CPU.",
    )
    torch_compile: bool = Field(
        False,
        description="On a GPU, compile the UNet with torch.compile when the model loads "
        "(minutes once per slot start, then faster calls; each new call size compiles "
        "again). Off by default: warm-up and slot starts stay short.",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="Weights dtype; float16 only on CUDA."
    )
    generate_model: str | None = Field(
        None,
        description="Stage-1 model: a diffusers folder or s3:// URI. None builds the tiny "
        "random-weight model (produces noise).",
    )
    upscale_model: str | None = Field(
        None,
        description="Stage-2 x4 upscaler: a diffusers folder or s3:// URI. None builds the tiny "
        "random-weight model (produces noise).",
    )
    model_cache_dir: Path = Field(
        Path(".img2img/models"), description="Where built and downloaded models are kept."
    )
    height: int = Field(64, ge=8, le=2048, multiple_of=8, description="Stage-1 input height.")
    width: int = Field(64, ge=8, le=2048, multiple_of=8, description="Stage-1 input width.")
    noise_level: int = Field(20, ge=0, le=350, description="x4 upscaler noise level.")
    torch_threads: int = Field(
        1, ge=1, le=256, description="torch threads per process (1 is fastest on small hosts)."
    )

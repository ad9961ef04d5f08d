"""The two compiling backends behind one interface: trace a part, save it, load it back.

`neuron` is the production one: `torch_neuronx.trace` compiles each part for NeuronCores,
and the UNet runs through `torch_neuronx.DataParallel` over the slot's core group.
`torchscript` traces the very same wrappers with `torch.jit.trace` into the same files and
manifest; it runs on CPU (or CUDA) anywhere, which is what keeps the Neuron code path honest
in CI. (`eager`, plain diffusers, needs no compiling and lives in `img2img.models.eager`.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from img2img.errors import ModelLoadError
from img2img.models.compiled.parts import PartName, use_plain_attention

NEURON_INSTALL = (
    "torch_neuronx is not installed. It only installs on an Inf2/Trn1 host with the Neuron "
    "DLAMI: `pip install --extra-index-url https://pip.repos.neuron.amazonaws.com "
    "torch-neuronx neuronx-cc` in the Neuron PyTorch virtual environment (see "
    "docs/architecture/compiled-models.md, 'Running on a real Inf2 host')"
)

# The published Stable Diffusion recipe: UNet and VAE compile as unet-inference, matmuls
# auto-cast to bf16, and every part as a fast-loading binary (loads in seconds, not minutes).
_FAST = "--enable-fast-loading-neuron-binaries"
_UNET_LIKE = ["--model-type=unet-inference", "--auto-cast=matmult", "--auto-cast-type=bf16"]
NEURON_COMPILER_ARGS: dict[str, list[str]] = {
    "text_encoder": [_FAST],
    "unet": [*_UNET_LIKE, _FAST],
    "vae_encoder": [*_UNET_LIKE, _FAST],
    "vae_decoder": [*_UNET_LIKE, _FAST],
}


class TraceBackend(Protocol):
    """How the compiled backends (torchscript, neuron) trace, save and load a part. The
    backend registry (`img2img.models.registry`) is what the rest of the code chooses backends by;
    this is the compile-time half of its two compiled entries."""

    name: str

    def compiler_args(self, part: PartName) -> list[str]: ...

    def prepare(self, pipe: Any) -> None:
        """Adjust the loaded source pipeline before its parts are traced."""
        ...

    def trace(
        self,
        module: torch.nn.Module,
        inputs: tuple[torch.Tensor, ...],
        part: PartName,
        workdir: Path,
    ) -> Any: ...

    def load(self, path: Path, part: PartName, cores: int) -> Callable[..., torch.Tensor]:
        """Load a saved part; a UNet compiled for `cores` > 1 takes the whole call batch."""
        ...


class TorchScriptBackend:
    name = "torchscript"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def compiler_args(self, part: PartName) -> list[str]:
        return []

    def prepare(self, pipe: Any) -> None:
        return None

    def trace(
        self,
        module: torch.nn.Module,
        inputs: tuple[torch.Tensor, ...],
        part: PartName,
        workdir: Path,
    ) -> Any:
        with torch.inference_mode(False), torch.no_grad():
            return torch.jit.trace(module, inputs, check_trace=False)

    def load(self, path: Path, part: PartName, cores: int) -> Callable[..., torch.Tensor]:
        module = torch.jit.load(str(path), map_location=self.device).eval()
        if part == "unet" and cores > 1:
            return _split_batch(module, cores)
        return module


def _split_batch(module: Any, parts: int) -> Callable[..., torch.Tensor]:
    """Run a batch compiled at 1/`parts` of the call batch in `parts` slices, as
    `torch_neuronx.DataParallel` does over `parts` NeuronCores (here one after another)."""

    def call(*args: torch.Tensor) -> torch.Tensor:
        slices = zip(*(arg.chunk(parts) for arg in args), strict=True)
        return torch.cat([module(*chunk) for chunk in slices])

    return call


class NeuronBackend:
    name = "neuron"

    def __init__(self) -> None:
        self.neuronx = _import_torch_neuronx()

    def compiler_args(self, part: PartName) -> list[str]:
        return list(NEURON_COMPILER_ARGS[part])

    def prepare(self, pipe: Any) -> None:
        use_plain_attention(pipe)

    def trace(
        self,
        module: torch.nn.Module,
        inputs: tuple[torch.Tensor, ...],
        part: PartName,
        workdir: Path,
    ) -> Any:
        # The published recipe's setting: fused softmax in the attention blocks.
        os.environ.setdefault("NEURON_FUSE_SOFTMAX", "1")
        return self.neuronx.trace(
            module,
            inputs,
            compiler_workdir=str(workdir / part),
            compiler_args=self.compiler_args(part),
        )

    def load(self, path: Path, part: PartName, cores: int) -> Callable[..., torch.Tensor]:
        module = torch.jit.load(str(path))
        if part != "unet" or cores == 1:
            return module
        visible = visible_core_count()
        if visible is not None and visible < cores:
            raise ModelLoadError(
                f"the UNet was compiled to split over {cores} NeuronCores but this process sees "
                f"{visible} (NEURON_RT_VISIBLE_CORES={os.environ.get('NEURON_RT_VISIBLE_CORES')}); "
                "give the slot a core group of that size (worker.core_groups)"
            )
        # Device ids are relative to the cores this process may see (its slot's core group).
        return self.neuronx.DataParallel(module, list(range(cores)), set_dynamic_batching=False)


def visible_core_count(value: str | None = None) -> int | None:
    """How many NeuronCores NEURON_RT_VISIBLE_CORES names ('0-1' → 2, '3' → 1, '0,2,4' → 3)."""
    spec = os.environ.get("NEURON_RT_VISIBLE_CORES") if value is None else value
    if not spec:
        return None
    count = 0
    for item in spec.split(","):
        first, _, last = item.strip().partition("-")
        count += (int(last) - int(first) + 1) if last else 1
    return count


def _import_torch_neuronx() -> Any:
    try:
        import torch_neuronx
    except ImportError as exc:
        raise ModelLoadError(NEURON_INSTALL) from exc
    if not hasattr(torch_neuronx, "trace"):
        # PyPI's torch-neuronx 1.0 is an empty placeholder; the real one comes from Neuron's index.
        raise ModelLoadError(
            f"the installed torch_neuronx is the PyPI placeholder. {NEURON_INSTALL}"
        )
    return torch_neuronx


def get_backend(name: str, device: str = "cpu") -> TraceBackend:
    if name == "torchscript":
        return TorchScriptBackend(device)
    if name == "neuron":
        return NeuronBackend()
    raise ModelLoadError(f"backend must be 'torchscript' or 'neuron' to compile, but is {name!r}")

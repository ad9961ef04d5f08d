"""The parts of each stage that are compiled, and the example inputs that fix their shapes.

The recipe is the published Neuron one: the CLIP text encoder at (1, 77) token ids, the UNet
through a wrapper that takes positional (sample, timestep, encoder_hidden_states[,
class_labels]), the VAE encoder with `quant_conv` (img2img only) and the VAE decoder with
`post_quant_conv`. Both backends trace exactly these modules, so the torchscript backend that
CI runs exercises the same wrappers and shapes an Inf2 host compiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from img2img.config.stages import StageKind

PartName = Literal["text_encoder", "unet", "vae_encoder", "vae_decoder"]


class TextEncoderPart(torch.nn.Module):
    """CLIP text encoder returning only the last hidden state (a tensor, not a dict)."""

    def __init__(self, text_encoder: Any) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.text_encoder(input_ids, return_dict=False)[0]
        return out


class UNetPart(torch.nn.Module):
    """The UNet with positional tensor arguments only, as tracing needs."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False
        )[0]
        return out


class UpscaleUNetPart(torch.nn.Module):
    """The x4 upscaler's UNet: also takes the noise level as class labels."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor,
    ) -> torch.Tensor:
        out: torch.Tensor = self.unet(
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            class_labels=class_labels,
            return_dict=False,
        )[0]
        return out


class VaeEncoderPart(torch.nn.Module):
    """VAE encoder followed by `quant_conv`: image → latent distribution moments."""

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        moments: torch.Tensor = self.encoder(image)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments


class VaeDecoderPart(torch.nn.Module):
    """`post_quant_conv` followed by the VAE decoder: latents → image."""

    def __init__(self, vae: Any) -> None:
        super().__init__()
        self.decoder = vae.decoder
        self.post_quant_conv = vae.post_quant_conv

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        image: torch.Tensor = self.decoder(latents)
        return image


@dataclass(frozen=True)
class Shapes:
    """Every tensor shape one stage call uses, derived from the compile settings.

    `height` × `width` is the stage's input image: the stage-1 shape for img2img, the
    low-resolution input (the stage-1 output) for the x4 upscaler.
    """

    kind: StageKind
    height: int
    width: int
    batch: int
    guidance: bool
    unet_cores: int
    vae_scale: int
    latent_channels: int
    unet_in_channels: int
    text_tokens: int
    text_hidden: int

    @property
    def unet_call_batch(self) -> int:
        """Rows per UNet call: the images, twice over when guidance is on."""
        return self.batch * (2 if self.guidance else 1)

    @property
    def unet_batch(self) -> int:
        """Rows the compiled UNet takes: the call batch split over the UNet's cores."""
        return self.unet_call_batch // self.unet_cores

    @property
    def latent_hw(self) -> tuple[int, int]:
        if self.kind == "upscale":
            return self.height, self.width  # the upscaler denoises at the input resolution
        return self.height // self.vae_scale, self.width // self.vae_scale

    def inputs(self, part: PartName) -> dict[str, tuple[int, ...]]:
        """The named input shapes of `part` (what the manifest records and loading checks)."""
        lh, lw = self.latent_hw
        if part == "text_encoder":
            return {"input_ids": (1, self.text_tokens)}
        if part == "unet":
            shapes = {
                "sample": (self.unet_batch, self.unet_in_channels, lh, lw),
                "timestep": (self.unet_batch,),
                "encoder_hidden_states": (self.unet_batch, self.text_tokens, self.text_hidden),
            }
            if self.kind == "upscale":
                shapes["class_labels"] = (self.unet_batch,)
            return shapes
        if part == "vae_encoder":
            # One image: with a generator per image (how the stages call it) diffusers
            # encodes the images one at a time; the runtime runs rows one after another.
            return {"image": (1, 3, self.height, self.width)}
        return {"latents": (self.batch, self.latent_channels, lh, lw)}


def stage_part_names(kind: StageKind) -> list[PartName]:
    if kind == "generate":
        return ["text_encoder", "unet", "vae_encoder", "vae_decoder"]
    return ["text_encoder", "unet", "vae_decoder"]  # the upscaler never encodes


def check_compile_shape(
    kind: StageKind, height: int, width: int, batch: int, guidance: bool, cores: int, vae_scale: int
) -> None:
    """Refuse compile settings that cannot give a valid static shape, naming the argument."""
    from img2img.errors import InvalidParameters

    if batch < 1:
        raise InvalidParameters(f"batch must be at least 1 but is {batch}")
    if cores < 1:
        raise InvalidParameters(f"cores must be at least 1 but is {cores}")
    step = vae_scale if kind == "generate" else 1
    for name, side in (("height", height), ("width", width)):
        if side < step or side % step:
            raise InvalidParameters(
                f"{name} must be a positive multiple of {step} (the VAE scale of this {kind} "
                f"model) but is {side}"
            )
    call_batch = batch * (2 if guidance else 1)
    if call_batch % cores:
        raise InvalidParameters(
            f"the UNet call batch ({batch} image(s){' × 2 for guidance' if guidance else ''} = "
            f"{call_batch}) does not split evenly over {cores} cores"
        )


def shapes_of(
    pipe: Any, kind: StageKind, height: int, width: int, batch: int, guidance: bool, unet_cores: int
) -> Shapes:
    """The shapes of `pipe`'s parts at the given compile settings (checked first)."""
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    check_compile_shape(kind, height, width, batch, guidance, unet_cores, vae_scale)
    return Shapes(
        kind=kind,
        height=height,
        width=width,
        batch=batch,
        guidance=guidance,
        unet_cores=unet_cores,
        vae_scale=vae_scale,
        latent_channels=pipe.vae.config.latent_channels,
        unet_in_channels=pipe.unet.config.in_channels,
        text_tokens=pipe.tokenizer.model_max_length,
        text_hidden=pipe.text_encoder.config.hidden_size,
    )


def traceable(pipe: Any, kind: StageKind, part: PartName) -> torch.nn.Module:
    """The wrapper module of `part`, in eval mode."""
    module: torch.nn.Module
    if part == "text_encoder":
        module = TextEncoderPart(pipe.text_encoder)
    elif part == "unet":
        module = UpscaleUNetPart(pipe.unet) if kind == "upscale" else UNetPart(pipe.unet)
    elif part == "vae_encoder":
        module = VaeEncoderPart(pipe.vae)
    else:
        module = VaeDecoderPart(pipe.vae)
    return module.eval()


def use_plain_attention(pipe: Any) -> None:
    """Switch UNet and VAE attention to diffusers' `AttnProcessor` (explicit matmul, softmax,
    matmul), as the Neuron recipe traces it: neuronx-cc fuses that pattern. On CPU the fused
    SDPA kernel is faster (it never builds the full attention matrix), so only the neuron
    backend does this."""
    from diffusers.models.attention_processor import AttnProcessor

    pipe.unet.set_attn_processor(AttnProcessor())
    pipe.vae.set_attn_processor(AttnProcessor())


def example_inputs(shapes: Shapes, part: PartName, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Seeded example tensors of exactly the compiled shapes, in the order `forward` takes."""
    gen = torch.Generator().manual_seed(0)
    out: list[torch.Tensor] = []
    for name, shape in shapes.inputs(part).items():
        if name == "input_ids":
            out.append(torch.randint(0, 100, shape, generator=gen, dtype=torch.long))
        elif name == "class_labels":
            out.append(torch.full(shape, 20, dtype=torch.long))
        elif name == "timestep":
            out.append(torch.full(shape, 500.0, dtype=torch.float32))
        else:
            out.append(torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype))
    return tuple(out)

"""Compiled parts put back into a real diffusers pipeline.

The pipeline classes (`StableDiffusionImg2ImgPipeline`, `StableDiffusionUpscalePipeline`),
their schedulers and tokenizer run as they are; only the text encoder, UNet and VAE are
replaced by the small modules below, which hold no weights, check every input against the
compiled shape and call the traced graph. The stage code therefore never knows which backend
it has, and nothing ever runs at a shape other than the compiled one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from img2img.errors import InvalidParameters, ModelLoadError
from img2img.models.compiled.manifest import Manifest
from img2img.models.compiled.parts import Shapes

PIPELINE_DIR = "pipeline"
Runner = Callable[..., torch.Tensor]


def _refuse(
    part: str, name: str, got: tuple[int, ...], want: tuple[int, ...], hint: str = ""
) -> None:
    if got != want:
        raise InvalidParameters(
            f"compiled {part} takes {name} of shape {list(want)} but was given {list(got)}"
            + (f"; {hint}" if hint else "")
        )


def _refuse_extras(part: str, extra: dict[str, Any]) -> None:
    """The traced graph takes only tensors of its compiled inputs: any other argument the
    pipeline passes with a value (LoRA scales, timestep conditioning, masks) would be
    silently ignored, so it is refused instead."""
    used = sorted(name for name, value in extra.items() if value is not None and value != {})
    if used:
        raise InvalidParameters(
            f"the compiled {part} cannot take {', '.join(used)}: it was traced without them"
        )


class _Shell(torch.nn.Module):
    """What the pipeline reads from a component besides calling it: config, device, dtype."""

    def __init__(self, config: Any, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.config = config
        self._dtype = dtype
        self._device = device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device


class CompiledTextEncoder(_Shell):
    def __init__(
        self, run: Runner, shapes: Shapes, config: Any, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__(config, dtype, device)
        self.run = run
        self.tokens = shapes.text_tokens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **extra: Any,
    ) -> tuple[torch.Tensor]:
        if output_hidden_states:
            raise InvalidParameters(
                "the compiled text encoder returns only its last hidden state "
                "(clip_skip is not supported)"
            )
        _refuse_extras("text encoder", {"attention_mask": attention_mask, **extra})
        _refuse(
            "text encoder",
            "input_ids",
            tuple(input_ids.shape[1:]),
            (self.tokens,),
            "prompts are padded to the tokenizer's max length",
        )
        # Compiled at one prompt: run the prompts of a batch one after another.
        rows = [self.run(row.unsqueeze(0)) for row in input_ids]
        return (torch.cat(rows),)


class CompiledUNet(_Shell):
    def __init__(
        self, run: Runner, shapes: Shapes, config: Any, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__(config, dtype, device)
        self.run = run
        self.shapes = shapes
        want = shapes.inputs("unet")
        call = shapes.unet_call_batch
        self.sample_shape = (call, *want["sample"][1:])
        self.context_shape = (call, *want["encoder_hidden_states"][1:])

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
        **extra: Any,
    ) -> Any:
        _refuse_extras("UNet", extra)
        guidance = "on" if self.shapes.guidance else "off"
        _refuse(
            "UNet",
            "sample",
            tuple(sample.shape),
            self.sample_shape,
            f"it was compiled for batch {self.shapes.batch} with guidance {guidance} "
            "(guidance on needs guidance_scale > 1, off needs <= 1)",
        )
        _refuse(
            "UNet", "encoder_hidden_states", tuple(encoder_hidden_states.shape), self.context_shape
        )
        t = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
        args = [sample, t.contiguous(), encoder_hidden_states]
        if self.shapes.kind == "upscale":
            if class_labels is None:
                raise InvalidParameters("the compiled upscaler UNet needs the noise level")
            args.append(
                class_labels.to(torch.long).reshape(-1).expand(sample.shape[0]).contiguous()
            )
        out = self.run(*args)
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)


class _DtypeProbe(torch.nn.Module):
    """The upscale pipeline reads the VAE dtype from `vae.post_quant_conv.parameters()`."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.marker = torch.nn.Parameter(torch.zeros(0, dtype=dtype), requires_grad=False)


class CompiledVae(_Shell):
    def __init__(
        self,
        encode: Runner | None,
        decode: Runner,
        shapes: Shapes,
        config: Any,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        super().__init__(config, dtype, device)
        self._encode, self._decode = encode, decode
        self.shapes = shapes
        self.post_quant_conv = _DtypeProbe(dtype)
        self.image_shape = shapes.inputs("vae_encoder")["image"]
        self.latent_shape = shapes.inputs("vae_decoder")["latents"]

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        if self._encode is None:
            raise InvalidParameters(
                "this compiled stage has no VAE encoder (the upscaler never encodes)"
            )
        _refuse("VAE encoder", "image", (1, *x.shape[1:]), self.image_shape)
        # Compiled at one image: run the images of a batch one after another.
        moments = torch.cat([self._encode(row.unsqueeze(0)) for row in x])
        dist = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator: Any = None) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        _refuse("VAE decoder", "latents", tuple(z.shape), self.latent_shape)
        image = self._decode(z)
        return DecoderOutput(sample=image) if return_dict else (image,)


def save_pipeline_configs(pipe: Any, folder: Path) -> None:
    """Everything of `pipe` except the compiled weights: tokenizer, schedulers, configs."""
    root = folder / PIPELINE_DIR
    pipe.tokenizer.save_pretrained(str(root / "tokenizer"))
    pipe.scheduler.save_pretrained(str(root / "scheduler"))
    if hasattr(pipe, "low_res_scheduler"):
        pipe.low_res_scheduler.save_pretrained(str(root / "low_res_scheduler"))
    pipe.unet.save_config(str(root / "unet"))
    pipe.vae.save_config(str(root / "vae"))
    pipe.text_encoder.config.save_pretrained(str(root / "text_encoder"))
    extra = (
        {"max_noise_level": int(pipe.config.max_noise_level)}
        if hasattr(pipe.config, "max_noise_level")
        else {}
    )
    (root / "pipeline.json").write_text(json.dumps(extra))


def _scheduler(folder: Path) -> Any:
    import diffusers

    name = json.loads((folder / "scheduler_config.json").read_text())["_class_name"]
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ModelLoadError(f"{folder} names scheduler {name!r}, which this diffusers lacks")
    return cls.from_pretrained(str(folder))


def assemble_pipeline(
    folder: Path, manifest: Manifest, shapes: Shapes, runners: dict[str, Runner], device: str
) -> Any:
    """A diffusers pipeline of `manifest.stage` whose parts are the compiled `runners`."""
    from diffusers import (
        AutoencoderKL,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from diffusers.configuration_utils import FrozenDict
    from transformers import CLIPTextConfig, CLIPTokenizer

    root = folder / PIPELINE_DIR
    dtype = getattr(torch, manifest.dtype)
    dev = torch.device(device)
    # The artifacts' local directory, never the Hub (bandit B615).
    text_config = CLIPTextConfig.from_pretrained(str(root / "text_encoder"))  # nosec B615
    text = CompiledTextEncoder(
        runners["text_encoder"],
        shapes,
        text_config,
        dtype,
        dev,
    )
    unet = CompiledUNet(
        runners["unet"],
        shapes,
        FrozenDict(UNet2DConditionModel.load_config(str(root / "unet"))),
        dtype,
        dev,
    )
    vae = CompiledVae(
        runners.get("vae_encoder"),
        runners["vae_decoder"],
        shapes,
        FrozenDict(AutoencoderKL.load_config(str(root / "vae"))),
        dtype,
        dev,
    )
    tokenizer = CLIPTokenizer.from_pretrained(
        str(root / "tokenizer")
        # a local artifacts directory, never the Hub (bandit B615)
    )  # nosec B615
    scheduler = _scheduler(root / "scheduler")
    pipe: Any
    if manifest.stage == "generate":
        pipe = StableDiffusionImg2ImgPipeline(
            vae=vae,
            text_encoder=text,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        extra = json.loads((root / "pipeline.json").read_text())
        pipe = StableDiffusionUpscalePipeline(
            vae=vae,
            text_encoder=text,
            tokenizer=tokenizer,
            unet=unet,
            low_res_scheduler=_scheduler(root / "low_res_scheduler"),
            scheduler=scheduler,
            max_noise_level=extra.get("max_noise_level", 350),
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe

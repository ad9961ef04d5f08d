"""Tiny random-weight pipelines of the real diffusers classes, built offline.

There is no model hub here, so the embedded default is these: the real
`StableDiffusionImg2ImgPipeline` and `StableDiffusionUpscalePipeline` with a few thousand
random weights each. They run the whole code path in well under a second on one CPU thread
and produce noise. Point `IMG2IMG_STAGES__GENERATE_MODEL` / `..._UPSCALE_MODEL` at real
checkpoints for real images.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

import torch


def _write_tokenizer_files(folder: Path) -> None:
    # One token per printable character (and its end-of-word form): every prompt tokenizes.
    tokens = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    chars = [c for c in string.printable if not c.isspace()]
    tokens += chars + [c + "</w>" for c in chars]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def tiny_tokenizer() -> Any:
    """A CLIP tokenizer with one token per printable character, padded to 77 tokens."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        _write_tokenizer_files(Path(tmp))
        # from_pretrained reads vocab.json + merges.txt on transformers 4.x and 5.x alike.
        return CLIPTokenizer.from_pretrained(
            tmp,
            model_max_length=77,
            # files written just above, never the Hub (bandit B615)
        )  # nosec B615


def _text_parts(seed: int) -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
    )
    return CLIPTextModel(config).eval(), tokenizer


def _tiny_unet(seed: int, in_channels: int, **extra: Any) -> Any:
    """The UNet both tiny stages share; the upscaler's takes the low-resolution image as 3
    more input channels and a noise-level class embedding (`extra`)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
        **extra,
    )


def _tiny_vae(seed: int, block_out_channels: tuple[int, ...], **extra: Any) -> Any:
    """Three down and three up blocks: latents at 1/4 of the image side."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=block_out_channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=8,
        **extra,
    )


def build_tiny_img2img(seed: int = 0) -> Any:
    """A random-weight `StableDiffusionImg2ImgPipeline` (latents at 1/4 of the image side)."""
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    unet = _tiny_unet(seed, in_channels=4)
    vae = _tiny_vae(seed, (8, 16, 16), sample_size=64)
    text_encoder, tokenizer = _text_parts(seed)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_upscale(seed: int = 0) -> Any:
    """A random-weight `StableDiffusionUpscalePipeline` (x4: the VAE decodes 4× the latents)."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    unet = _tiny_unet(seed, in_channels=7, num_class_embeds=351)
    vae = _tiny_vae(seed, (8, 8, 16), scaling_factor=0.08333)
    text_encoder, tokenizer = _text_parts(seed)
    return StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )


def save_tiny(kind: str, folder: Path, seed: int = 0) -> None:
    """Build the tiny model of `kind` ("generate" or "upscale") and save it to `folder`."""
    builder = {"generate": build_tiny_img2img, "upscale": build_tiny_upscale}[kind]
    builder(seed).save_pretrained(str(folder))

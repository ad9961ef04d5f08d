"""The shipped real-model configs build the published architectures (counted on meta)."""

from __future__ import annotations

from img2img.dev.realsize import folder_for, parameter_counts


def test_configs_give_the_published_parameter_counts() -> None:
    # Published sizes: SD 1.5 UNet 859.5 M, its VAE 83.7 M, CLIP ViT-L/14 text 123.1 M;
    # SD 2.x UNet 865.9 M with the OpenCLIP ViT-H text encoder (340.4 M).
    sd15 = parameter_counts("sd15")
    assert sd15 == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    sd21 = parameter_counts("sd21")
    assert sd21["unet"] == 865_910_724 and sd21["text_encoder"] == 340_387_840
    x4 = parameter_counts("x4-upscaler")
    assert 470e6 < x4["unet"] < 480e6 and x4["text_encoder"] == 340_387_840


def test_every_size_has_an_upscaler() -> None:
    assert folder_for("generate", "sd21") == "sd21"
    assert folder_for("upscale", "sd15") == "x4-upscaler"

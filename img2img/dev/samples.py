"""Sample uploads for the demo and benchmarks: varied sizes and aspects, with prompts."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

SIZES = [(96, 64), (64, 96), (128, 128), (200, 120), (80, 80), (300, 200), (72, 160), (256, 144)]
PROMPTS = [
    "a watercolor landscape at dawn",
    "a portrait in the style of an oil painting",
    "a futuristic city, neon lights",
    "a cat sitting on a windowsill",
    "a bowl of fruit, studio lighting",
    "mountains under a starry sky",
]


def sample_png(index: int) -> bytes:
    """A deterministic test card: gradient, shapes and the index, at one of SIZES."""
    width, height = SIZES[index % len(SIZES)]
    image = Image.new("RGB", (width, height))
    pixels = image.load()
    assert pixels is not None
    for y in range(height):
        for x in range(width):
            pixels[x, y] = ((x * 255) // width, (y * 255) // height, (index * 47) % 256)
    draw = ImageDraw.Draw(image)
    draw.ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), outline=(255, 255, 255), width=2
    )
    draw.text((4, 4), str(index), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sample_metadata(index: int, steps: int, upscale_steps: int) -> dict[str, str]:
    return {
        "prompt": PROMPTS[index % len(PROMPTS)],
        "steps": str(steps),
        "upscale-steps": str(upscale_steps),
        "strength": "0.7",
    }

"""What an upload may be before it is decoded.

Environment: `IMG2IMG_LIMITS__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ImageLimits(BaseModel):
    """What an upload may be before it is decoded."""

    max_bytes: int = Field(25 * 1024 * 1024, ge=1, description="Largest accepted object, in bytes.")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted width × height (decompression bombs)."
    )
    min_side: int = Field(8, ge=1, description="Smallest accepted width or height, in pixels.")
    formats: tuple[str, ...] = Field(
        ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "GIF"),
        description="Accepted Pillow format names (HEIC/HEIF through pillow-heif; GIF and "
        "animated WebP give their first frame).",
    )

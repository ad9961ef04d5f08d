"""Per-image generation parameters: defaults from the deployment, overrides from S3 metadata."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from img2img.errors import InvalidParameters

# User-metadata keys (x-amz-meta-<key>) that set a parameter, and the field each one sets.
METADATA_FIELDS = {
    "prompt": "prompt",
    "negative-prompt": "negative_prompt",
    "strength": "strength",
    "steps": "steps",
    "guidance": "guidance",
    "seed": "seed",
    "upscale-steps": "upscale_steps",
}


class ImageParams(BaseModel):
    """How one image is generated. Every field is bounded; nothing is silently corrected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field("a detailed photograph", max_length=1000, description="Stage-1 prompt.")
    negative_prompt: str = Field("", max_length=1000, description="Stage-1 negative prompt.")
    strength: float = Field(0.6, gt=0.0, le=1.0, description="How much stage 1 changes the image.")
    steps: int = Field(30, ge=1, le=150, description="Stage-1 denoising steps.")
    guidance: float = Field(7.5, ge=0.0, le=30.0, description="Classifier-free guidance scale.")
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Random seed; None derives one from the upload."
    )
    upscale_steps: int = Field(20, ge=1, le=150, description="Stage-2 denoising steps.")

    @model_validator(mode="after")
    def _at_least_one_denoising_step(self) -> ImageParams:
        # img2img runs int(steps × strength) steps: zero would return the input unchanged.
        if int(self.steps * self.strength) < 1:
            raise ValueError(
                "steps × strength must be at least 1 denoising step, but is "
                f"{self.steps} × {self.strength}"
            )
        return self

    def seed_for(self, identity: str) -> int:
        """The seed to use: the given one, else a stable hash of the upload's identity, so a
        re-run of the same upload gives the same image."""
        if self.seed is not None:
            return self.seed
        return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:4], "big")


def params_from_metadata(metadata: dict[str, str], defaults: ImageParams) -> ImageParams:
    """Merge an object's user metadata over `defaults`.

    Values are URL-decoded, so clients can send UTF-8 prompts percent-encoded (S3 metadata is
    ASCII). Keys this pipeline does not know are ignored: apps put their own metadata there.
    """
    overrides: dict[str, Any] = {}
    for meta_key, value in metadata.items():
        name = METADATA_FIELDS.get(meta_key.lower())
        if name is not None:
            overrides[name] = unquote(value)
    if not overrides:
        return defaults
    try:
        return ImageParams.model_validate({**defaults.model_dump(), **overrides})
    except ValidationError as exc:
        raise InvalidParameters(_describe(exc, overrides)) from exc


def _describe(exc: ValidationError, given: dict[str, Any]) -> str:
    reverse = {v: k for k, v in METADATA_FIELDS.items()}
    parts = []
    for err in exc.errors():
        if not err["loc"]:  # a rule across fields
            parts.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        name = str(err["loc"][0])
        value = given.get(name, "<default>")
        parts.append(
            f"metadata '{reverse.get(name, name)}': {err['msg']} but is {str(value)[:60]!r}"
        )
    return "; ".join(parts)

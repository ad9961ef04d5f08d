"""What every command group shares: progress lines on stderr, the noise notice."""

from __future__ import annotations

import sys

NOISE_NOTICE = (
    "note: the stages use tiny random-weight models (no model hub here), so results are "
    "noise. Set IMG2IMG_STAGES__GENERATE_MODEL and IMG2IMG_STAGES__UPSCALE_MODEL to diffusers "
    "checkpoints (folders or s3:// URIs) for real images."
)


def say(message: str) -> None:
    """A progress line for a person, on stderr (stdout is for JSON)."""
    print(f"  {message}", file=sys.stderr, flush=True)

"""The two inference stages. Each takes a loaded pipeline, so it never knows the backend."""

from typing import Literal

# The one definition of what a stage's model is: stage 1 (img2img) or stage 2 (x4 upscale).
StageKind = Literal["img2img", "upscale"]

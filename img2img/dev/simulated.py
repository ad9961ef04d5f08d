"""The simulated backend: a stand-in pipeline that waits a device time per call (a fixed
part and a part per image).

It measures orchestration and I/O at accelerator speeds on a machine without one: the wait
is a sleep, so it holds no CPU, like a call blocked on a NeuronCore. Benchmarks only; every
output that used it says so.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class SimulatedOutput:
    images: list[Image.Image]


class SimulatedPipeline:
    """Called like a diffusers pipeline; returns each input resized by `scale`.

    A call of n images waits `call_ms × (1 + image_share × (n − 1))`: a fixed part paid
    once per call (weights read, launch, host round trip) and a part per image, cut into
    `steps` equal waits with the pipeline's step callback (`callback_on_step_end`) between
    two, as a diffusers call runs its denoising steps (one step: no callback, as before).
    """

    def __init__(
        self,
        kind: str,
        call_ms: float,
        scale: int,
        crash_marker: str | None = None,
        hang_marker: str | None = None,
        hang_file: Path | None = None,
        image_share: float = 1.0,
        steps: int = 1,
    ) -> None:
        self.kind = kind
        self.call_ms = call_ms
        self.scale = scale
        self.crash_marker = crash_marker
        self.hang_marker = hang_marker
        self.hang_file = hang_file
        self.image_share = image_share
        self.steps = max(1, steps)
        self.calls = 0
        self.images = 0

    def call_s(self, count: int) -> float:
        """The device time of a call of `count` images, in seconds."""
        return self.call_ms * (1.0 + self.image_share * (count - 1)) / 1000.0

    def __call__(
        self,
        *,
        image: Image.Image | list[Image.Image],
        prompt: Any = None,
        callback_on_step_end: Callable[[Any, int, Any, dict[str, Any]], Any] | None = None,
        **_: Any,
    ) -> SimulatedOutput:
        images = image if isinstance(image, list) else [image]
        prompts = prompt if isinstance(prompt, list) else [prompt]
        said = " ".join(str(p or "") for p in prompts)
        if self.crash_marker and self.crash_marker in said:
            # Fault injection: die the way a faulting compiled graph takes its process down.
            os.kill(os.getpid(), signal.SIGKILL)
        if (self.hang_marker and self.hang_marker in said) or (
            self.hang_file is not None and self.hang_file.exists()
        ):
            # Fault injection: a device call that never returns (the process stays alive and
            # its other threads run, as with a Neuron runtime or a GPU kernel that stopped).
            while True:
                time.sleep(3600)
        step_s = self.call_s(len(images)) / self.steps
        for step in range(self.steps):
            if step and callback_on_step_end is not None:
                callback_on_step_end(self, step - 1, None, {})  # between two steps
            time.sleep(step_s)
        self.calls += 1
        self.images += len(images)
        out = [
            im.resize((im.size[0] * self.scale, im.size[1] * self.scale), Image.Resampling.NEAREST)
            for im in images
        ]
        return SimulatedOutput(images=out)

    def set_progress_bar_config(self, **_: Any) -> None:
        return None

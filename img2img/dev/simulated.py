"""The simulated backend: a stand-in pipeline that waits a fixed device time per call.

It measures orchestration and I/O at accelerator speeds on a machine without one: the wait
is a sleep, so it holds no CPU, like a call blocked on a NeuronCore. Benchmarks only; every
output that used it says so.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class SimulatedOutput:
    images: list[Image.Image]


class SimulatedPipeline:
    """Called like a diffusers pipeline; returns the input resized by `scale`."""

    def __init__(
        self,
        kind: str,
        call_ms: float,
        scale: int,
        crash_marker: str | None = None,
        hang_marker: str | None = None,
        hang_file: Path | None = None,
    ) -> None:
        self.kind = kind
        self.call_ms = call_ms
        self.scale = scale
        self.crash_marker = crash_marker
        self.hang_marker = hang_marker
        self.hang_file = hang_file
        self.calls = 0

    def __call__(self, *, image: Image.Image, prompt: Any = None, **_: Any) -> SimulatedOutput:
        if self.crash_marker and self.crash_marker in str(prompt or ""):
            # Fault injection: die the way a faulting compiled graph takes its process down.
            os.kill(os.getpid(), signal.SIGKILL)
        if (self.hang_marker and self.hang_marker in str(prompt or "")) or (
            self.hang_file is not None and self.hang_file.exists()
        ):
            # Fault injection: a device call that never returns (the process stays alive and
            # its other threads run, as with a Neuron runtime or a GPU kernel that stopped).
            while True:
                time.sleep(3600)
        time.sleep(self.call_ms / 1000.0)
        self.calls += 1
        width, height = image.size
        out = image.resize((width * self.scale, height * self.scale), Image.Resampling.NEAREST)
        return SimulatedOutput(images=[out])

    def set_progress_bar_config(self, **_: Any) -> None:
        return None

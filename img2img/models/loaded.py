"""The stage models of this process: loaded once (through the backend registry,
`img2img.models.registry`), kept, and warmed up before the first request."""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from img2img.config.stages import StageKind, StageSettings
from img2img.models import registry as backends

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass
class ModelCache:
    """Pipelines loaded in this process, keyed by stage kind and source folder.

    `loads` counts real loads, so callers (and tests) can see that a model was loaded once
    and then reused.
    """

    _pipes: dict[tuple[str, ...], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    loads: int = 0
    load_s: float = 0.0
    # Held for a whole stage over a batch: device calls of concurrent runs never overlap.
    # A warm slot swaps in a lock that also tells its worker which run is on the device.
    device_lock: AbstractContextManager[Any] = field(default_factory=threading.Lock)

    def get(self, kind: StageKind, settings: StageSettings, s3: S3Client | None = None) -> Any:
        with self._lock:
            key = backends.cache_key(kind, settings)
            pipe = self._pipes.get(key)
            if pipe is None:
                start = time.perf_counter()
                pipe = backends.load(kind, settings, s3)
                self._pipes[key] = pipe
                self.loads += 1
                self.load_s += time.perf_counter() - start
            return pipe

    def warm_up(
        self,
        settings: StageSettings,
        s3: S3Client | None = None,
        stages: tuple[StageKind, ...] = ("generate", "upscale"),
    ) -> dict[str, float]:
        """Load the `stages`' models (both, or one on a split topology's pool) and run the
        smallest call there is through each (one image, or the smallest compiled size), so
        the first real request does not pay for lazy initialisation. Returns each stage's
        call time in seconds (by stage name), scaled up to the largest call size
        (`backends.call_sizes`), from which a slot's hang deadlines are set: an upper bound
        of a call's time between two progress marks, since the first call also pays for
        what is initialised lazily and a call of n images costs at most n calls of one."""
        from PIL import Image

        from img2img.intake.params import ImageParams
        from img2img.pipeline.stages.generate import run_generate
        from img2img.pipeline.stages.spec import GENERATE, UPSCALE
        from img2img.pipeline.stages.upscale import run_upscale

        params = ImageParams(prompt="warm-up", steps=2, strength=0.5, upscale_steps=1)
        shape = (settings.width, settings.height)
        call_s: dict[str, float] = {}
        # Stage 1 keeps the size; stage 2 takes a blank of it when stage 1 is not here.
        images = [Image.new("RGB", shape)]
        for kind, stage in (("generate", GENERATE), ("upscale", UPSCALE)):
            if kind not in stages:
                continue
            pipe = self.get(kind, settings, s3)
            sizes = backends.call_sizes(settings, pipe).sizes
            # The smallest call there is (one image, or the smallest compiled size, padded).
            count = sizes[0]
            blank, each, seeds = images[:1] * count, [params] * count, [0] * count
            with self.device_lock:
                start = time.perf_counter()
                if kind == "generate":
                    images = run_generate(pipe, blank, each, seeds, shape)
                else:
                    run_upscale(pipe, blank, each, seeds, settings.noise_level)
                call_s[stage.name] = round((time.perf_counter() - start) * sizes[-1] / count, 3)
        return call_s


_process_cache: ModelCache | None = None


def configure_torch(settings: StageSettings) -> None:
    """Set this process's torch threads (one is fastest on small hosts under load)."""
    import torch

    torch.set_num_threads(settings.torch_threads)


def process_models() -> ModelCache:
    """The model cache of this process (created on first use, never at import)."""
    global _process_cache
    if _process_cache is None:
        _process_cache = ModelCache()
    return _process_cache

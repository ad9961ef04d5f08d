"""Compiled artifacts at several batch sizes, and the pipeline that runs each call at its own.

A compiled graph runs one batch size. `img2img compile --batch 1,4 --out X` writes one
complete artifact per size (`X/batch-1/`, `X/batch-4/`, each with its manifest) and then
`X/sizes.json`, the index a loader reads first (written last: a reader never sees an index
of sizes that are not all there). One size (`--batch 4`) writes the artifact at `X` itself,
as before.

`CompiledSizes` holds a loaded pipeline per size and is called like one: a call of n images
goes to the pipeline compiled for n (the stage's planner only makes calls of the sizes it
was given, padded where that is cheaper: `img2img.pipeline.device_batches`).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from img2img.aws.clients import translate_error
from img2img.aws.folders import split_s3_uri
from img2img.errors import InvalidParameters, ModelLoadError, ObjectMissing

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SIZES = "sizes.json"


def size_folder(out: str, batch: int) -> str:
    """Where the artifact of one batch size goes under `out` (a folder or an s3:// prefix)."""
    return f"{out.rstrip('/')}/batch-{batch}"


def parse_batches(text: str, option: str = "--batch") -> list[int]:
    """`"1,4"` → [1, 4]: the sizes `option` names, each at least 1, in order, once."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InvalidParameters(
            f"{option} takes a size or sizes like 1,2,4,8, got {text!r}"
        ) from None
    if not sizes or sizes[0] < 1:
        raise InvalidParameters(f"{option} sizes must be at least 1, got {text!r}")
    return sizes


def sizes_document(stage: str, backend: str, batches: list[int]) -> str:
    return json.dumps({"stage": stage, "backend": backend, "batches": batches}, indent=2) + "\n"


def read_sizes(source: str, s3: S3Client | None) -> list[int] | None:
    """The batch sizes an artifact location holds (from its `sizes.json`), or None when it
    is a single artifact."""
    if source.startswith("s3://"):
        if s3 is None:
            raise ModelLoadError(
                f"compiled artifacts {source} are on S3 but no S3 client was given"
            )
        bucket, prefix = split_s3_uri(source)
        key = f"{prefix}/{SIZES}" if prefix else SIZES
        try:
            raw = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except Exception as exc:  # mapped onto the error tree
            err = translate_error(exc, f"s3://{bucket}/{key}")
            if isinstance(err, ObjectMissing):
                return None
            raise err from exc
        where = f"s3://{bucket}/{key}"
    else:
        path = Path(source) / SIZES
        if not path.exists():
            return None
        raw, where = path.read_text(), str(path)
    try:
        batches = [int(b) for b in json.loads(raw)["batches"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{where} is not a sizes index: {exc}") from exc
    if not batches or min(batches) < 1:
        raise ModelLoadError(f"{where} lists no usable batch size: {batches}")
    return sorted(set(batches))


def artifact_locations(
    source: str, s3: S3Client | None, wanted: list[int] | None
) -> list[tuple[int | None, str]]:
    """Where the artifacts of `source` are, with the batch size each holds: one per size
    (of `wanted`, `stages.compiled_batches`) under a sizes index, or `source` itself (its
    size is in its manifest: None here)."""
    available = read_sizes(source, s3)
    if available is None:
        return [(None, source)]
    return [(b, size_folder(source, b)) for b in choose_sizes(available, wanted, source)]


def choose_sizes(available: list[int], wanted: list[int] | None, where: str) -> list[int]:
    """The sizes to load: all that are there, or those of `wanted` (stages.compiled_batches)
    that are; an error naming both when none is."""
    if wanted is None:
        return available
    chosen = [b for b in available if b in wanted]
    if not chosen:
        raise ModelLoadError(
            f"compiled artifacts {where} hold batch sizes {available}, "
            f"stages.compiled_batches asks for {sorted(wanted)}: none of them is there"
        )
    return chosen


class CompiledSizes:
    """Pipelines compiled for different batch sizes, called like one diffusers pipeline."""

    def __init__(self, pipes: Mapping[int, Any]) -> None:
        if not pipes:
            raise ValueError("CompiledSizes needs at least one pipeline")
        self.pipes = dict(sorted(pipes.items()))
        self.calls = {size: 0 for size in self.pipes}
        first = next(iter(self.pipes.values()))
        # What the stage code inspects to attach its step callback.
        self.call_parameters = inspect.signature(first.__call__).parameters

    @property
    def call_sizes(self) -> tuple[int, ...]:
        return tuple(self.pipes)

    def for_one_call(self) -> CompiledSizes:
        """A view for one call that may be paused between its steps (`own_state`): the
        same compiled graphs, each size's pipeline with its own per-call state; the call
        counts stay shared."""
        from img2img.models.per_call import own_state

        view = copy.copy(self)
        view.pipes = {size: own_state(pipe) for size, pipe in self.pipes.items()}
        return view

    def __call__(self, **kwargs: Any) -> Any:
        images = kwargs.get("image")
        count = len(images) if isinstance(images, list) else 1
        pipe = self.pipes.get(count)
        if pipe is None:
            raise InvalidParameters(
                f"no compiled graph runs {count} image(s) per call; the artifacts were "
                f"compiled for {list(self.pipes)} (the stage pads calls to these sizes)"
            )
        self.calls[count] += 1
        return pipe(**kwargs)

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        for pipe in self.pipes.values():
            pipe.set_progress_bar_config(**kwargs)

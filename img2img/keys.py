"""Where each object of an upload lives, in one place.

Directory-bucket keys are dense and entropy-free: one prefix per stage, then the upload's
own key and tag, so listings stay in few directories and a stage's output is found from the
upload alone (stage 2 can be re-run from stage 1's output without redoing stage 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from img2img.events import ObjectRef


def _safe_tag(ref: ObjectRef) -> str:
    return ref.tag.replace("/", "_")


@dataclass(frozen=True)
class UploadKeys:
    """Every key derived from one upload."""

    input: str
    stage1: str
    stage2: str
    result: str
    result_meta: str
    failure: str


def keys_for(ref: ObjectRef) -> UploadKeys:
    tag = _safe_tag(ref)
    base = f"{ref.key}@{tag}"
    return UploadKeys(
        input=f"input/{base}",
        stage1=f"stage1/{base}.png",
        stage2=f"stage2/{base}.png",
        result=f"results/{base}.png",
        result_meta=f"results/{base}.json",
        failure=f"failed/{base}.json",
    )

"""Where each object of an upload lives, in one place, and which upload keys are safe.

Directory-bucket keys are dense and entropy-free: one prefix per stage, then the upload's
bucket, its own key and tag, so listings stay in few directories, a stage's output is found
from the upload alone (stage 2 can be re-run from stage 1's output without redoing stage 1),
and two buckets' uploads of the same key never share an outcome.

An upload key is used in derived keys only when it is safe: no `.` or `..` path segment,
with `/` or `\` as the separator (a tool that syncs results to a disk would resolve it
outside its folder), no control character (C0, DEL or C1), no line or paragraph separator
(U+2028, U+2029: a new line in a log or a terminal), no bidirectional control (which makes
a key read as another in a console or a review), and short enough that every derived key
fits S3's 1,024 bytes. An unsafe key's
outcome goes to a hashed key instead (`failed/<bucket>/_unsafe/<sha256>@<tag>.json`), so
it still gets its one failure record, inside its prefix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from img2img.intake.events import ObjectRef

MAX_S3_KEY_BYTES = 1024
UNSAFE_PREFIX = "_unsafe"
# Characters a key may not hold: C0 controls and DEL, C1 controls, the line and paragraph
# separators, and the bidirectional marks, embeddings, overrides and isolates.
_UNSAFE_CHARS = frozenset(
    [
        *range(0x00, 0x20),
        0x7F,
        *range(0x80, 0xA0),
        0x2028,
        0x2029,
        0x061C,
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
)
# The longest prefix and suffix that `keys_for` adds around "<bucket>/<key>@<tag>".
_LONGEST_WRAP = len("results/") + len(".json")


def _safe_tag(ref: ObjectRef) -> str:
    return ref.tag.replace("/", "_")


def unsafe_key_reason(ref: ObjectRef) -> str | None:
    """Why `ref.key` cannot be used inside derived keys, or None when it can."""
    key = ref.key
    if not key:
        return "the object key is empty"
    bad = sorted({ord(c) for c in key if ord(c) in _UNSAFE_CHARS})
    if bad:
        named = ", ".join(f"U+{c:04X}" for c in bad)
        return (
            f"object key {key!r:.120} contains control, line-separator or bidirectional "
            f"characters ({named})"
        )
    segments = key.replace("\\", "/").split("/")
    dots = sorted({s for s in segments if s in (".", "..")})
    if dots:
        return (
            f"object key {key!r:.120} has {' and '.join(repr(d) for d in dots)} path "
            "segments, which would resolve outside their folder"
        )
    longest = len(f"{ref.bucket}/{key}@{_safe_tag(ref)}".encode()) + _LONGEST_WRAP
    if longest > MAX_S3_KEY_BYTES:
        return (
            f"object key is {len(key.encode())} bytes; its outcome key would be {longest} bytes, "
            f"over S3's {MAX_S3_KEY_BYTES}"
        )
    return None


@dataclass(frozen=True)
class UploadKeys:
    """Every key derived from one upload."""

    input: str
    generate: str
    upscale: str
    result: str
    result_meta: str
    failure: str


def outcome_stem(ref: ObjectRef) -> str:
    """`<bucket>/<key>@<tag>` (hashed for an unsafe key): what every derived key is built
    around, and what the reconciler compares uploads and outcomes by."""
    tag = _safe_tag(ref)
    if unsafe_key_reason(ref) is None:
        return f"{ref.bucket}/{ref.key}@{tag}"
    digest = hashlib.sha256(ref.key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{ref.bucket}/{UNSAFE_PREFIX}/{digest}@{tag[:64]}"


def keys_for(ref: ObjectRef) -> UploadKeys:
    base = outcome_stem(ref)
    return UploadKeys(
        input=f"input/{base}",
        generate=f"generate/{base}.png",
        upscale=f"upscale/{base}.png",
        result=f"results/{base}.png",
        result_meta=f"results/{base}.json",
        failure=f"failed/{base}.json",
    )


def outcome_prefixes(bucket: str, prefix: str = "") -> tuple[str, str]:
    """The result and failure-record prefixes under which uploads of `bucket` whose keys
    start with `prefix` have their outcomes (for listing, as the reconciler does)."""
    return f"results/{bucket}/{prefix}", f"failed/{bucket}/{prefix}"


def stem_from_outcome_key(key: str) -> str | None:
    """The `outcome_stem` of an outcome document's key (`results/...json` or
    `failed/...json`), or None for anything else (result images, unrelated objects)."""
    for head in ("results/", "failed/"):
        if key.startswith(head) and key.endswith(".json"):
            return key[len(head) : -len(".json")]
    return None

"""`manifest.json`: what a set of compiled artifacts is, checked before anything is loaded.

Compiled graphs are frozen at one batch, height, width, guidance setting and dtype, and are
tied to the library versions that produced them. The manifest records all of it plus a
SHA-256 per file, and `check_manifest` compares it with the stage settings and the installed
libraries, returning every mismatch at once so one error names them all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from img2img.errors import ModelLoadError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# Libraries whose version is recorded. The graph is bound to torch (and, for Neuron, to the
# runtime and compiler that built the NEFFs), so those must match; diffusers and transformers
# only run the untraced pipeline around the graphs, so a difference there is logged, not fatal.
RECORDED = ("torch", "diffusers", "transformers", "torch-neuronx", "neuronx-cc", "img2img")
MUST_MATCH: dict[str, tuple[str, ...]] = {
    "torchscript": ("torch",),
    "neuron": ("torch", "torch-neuronx", "neuronx-cc"),
}


@dataclass(frozen=True)
class PartRecord:
    file: str
    sha256: str
    bytes: int
    inputs: dict[str, list[int]]
    compiler_args: list[str]
    compile_s: float


# A stage's old name → its name now (manifests written before the rename).
RENAMED_STAGES = {"img2img": "generate"}


@dataclass(frozen=True)
class Manifest:
    stage: str
    backend: str
    source_model: str
    source_revision: str
    height: int
    width: int
    batch: int
    guidance: bool
    unet_cores: int
    dtype: str
    versions: dict[str, str]
    parts: dict[str, PartRecord]
    created_at: str
    shapes: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            raw = json.loads(text)
            # Artifacts compiled before the stage was named `generate` say `img2img`.
            raw["stage"] = RENAMED_STAGES.get(raw["stage"], raw["stage"])
            parts = {name: PartRecord(**rec) for name, rec in raw.pop("parts").items()}
            return cls(parts=parts, **raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"{where} is not a valid img2img compile manifest: {exc}") from exc


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.exists():
        raise ModelLoadError(
            f"{folder} has no {MANIFEST}: it is not a compiled artifact folder (make one with "
            "`img2img compile`)"
        )
    return Manifest.from_json(path.read_text(), str(path))


def installed_versions() -> dict[str, str]:
    """Versions of the recorded libraries in this environment ("absent" when not installed)."""
    out: dict[str, str] = {}
    for name in RECORDED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _release(version: str) -> str:
    """Major.minor of a version, without a local part ('2.13.0+cpu' → '2.13')."""
    return ".".join(version.split("+")[0].split(".")[:2])


def _same(name: str, built: str, here: str) -> bool:
    # torch: the same major.minor reads the same TorchScript; Neuron parts must be exact.
    if name == "torch":
        return _release(built) == _release(here)
    return built == here


def check_manifest(
    manifest: Manifest,
    *,
    stage: str,
    backend: str,
    height: int,
    width: int,
    dtype: str,
    versions: dict[str, str],
    batch: int | None = None,
) -> list[str]:
    """Every way `manifest` does not fit this stage, backend, shape, dtype and environment.

    `height` × `width` is the stage's input shape (the stage-1 shape for both stages: the
    upscaler's input is stage 1's output); `batch`, when given, the images per call the
    caller runs. An empty list means the artifacts may be loaded.
    """
    problems: list[str] = []
    if manifest.format_version != FORMAT_VERSION:
        problems.append(
            f"manifest format {manifest.format_version}, this img2img reads {FORMAT_VERSION}"
        )
    if manifest.stage != stage:
        problems.append(f"compiled for stage {manifest.stage!r}, loaded as stage {stage!r}")
    if manifest.backend != backend:
        problems.append(f"compiled for backend {manifest.backend!r}, settings say {backend!r}")
    if (manifest.width, manifest.height) != (width, height):
        problems.append(
            f"compiled for {manifest.width}x{manifest.height} input images, the stage settings "
            f"give {width}x{height} (stages.width x stages.height)"
        )
    if batch is not None and manifest.batch != batch:
        problems.append(f"compiled for {manifest.batch} image(s) per call, the caller runs {batch}")
    if manifest.dtype != dtype:
        problems.append(f"compiled in {manifest.dtype}, settings say {dtype} (stages.dtype)")
    for name in MUST_MATCH.get(manifest.backend, ()):
        built, here = manifest.versions.get(name, "absent"), versions.get(name, "absent")
        if not _same(name, built, here):
            problems.append(f"compiled with {name} {built}, installed is {here}")
    return problems


def soft_differences(manifest: Manifest, versions: dict[str, str]) -> list[str]:
    """Library versions that differ but do not stop loading (worth a log line)."""
    return [
        f"{name} {manifest.versions.get(name)} at compile, {versions.get(name)} here"
        for name in ("diffusers", "transformers")
        if _release(manifest.versions.get(name, "")) != _release(versions.get(name, ""))
    ]


def sha256_of(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: Path, manifest: Manifest, *, hash_files: bool = True) -> None:
    """Raise ModelLoadError naming every part file that is missing or does not match.

    With `hash_files=False` only sizes are compared (for a cache folder whose files were
    hashed when they were downloaded).
    """
    bad: list[str] = []
    for name, rec in sorted(manifest.parts.items()):
        path = folder / rec.file
        if not path.exists():
            bad.append(f"{rec.file} ({name}) is missing")
        elif path.stat().st_size != rec.bytes:
            bad.append(
                f"{rec.file} ({name}) is {path.stat().st_size} bytes, manifest says {rec.bytes}"
            )
        elif hash_files and sha256_of(path) != rec.sha256:
            bad.append(f"{rec.file} ({name}) has a different SHA-256 than the manifest")
    if bad:
        raise ModelLoadError(f"compiled artifacts in {folder} are damaged: " + "; ".join(bad))

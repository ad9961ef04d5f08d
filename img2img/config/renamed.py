"""Settings that moved, and where to: an old name still works, with a warning that names the
new one, so a deployment's environment keeps working across an upgrade.

Pure: `move_renamed` rewrites the raw settings data (what the environment and the keyword
arguments give, before validation).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

Path = tuple[str, ...]

# old place → new place, as paths in the settings tree (IMG2IMG_A__B is ("a", "b")).
RENAMED: Mapping[Path, Path] = {
    ("stages", "simulated_img2img_ms"): ("stages", "simulated", "generate_ms"),
    ("stages", "simulated_upscale_ms"): ("stages", "simulated", "upscale_ms"),
    ("stages", "simulated_image_share"): ("stages", "simulated", "image_share"),
    ("stages", "simulated_load_s"): ("stages", "simulated", "load_s"),
    ("stages", "simulated_crash_marker"): ("stages", "simulated", "crash_marker"),
    ("stages", "simulated_hang_marker"): ("stages", "simulated", "hang_marker"),
    ("stages", "simulated_hang_file"): ("stages", "simulated", "hang_file"),
    ("dispatch", "crash_flag"): ("faults", "dispatcher_crash_flag"),
}


def env_name(path: Path) -> str:
    return "IMG2IMG_" + "__".join(part.upper() for part in path)


def move_renamed(data: MutableMapping[str, Any]) -> list[str]:
    """Move every value found at an old place to its new one (a value already at the new
    place wins); returns one warning per value moved or dropped."""
    warnings: list[str] = []
    for old, new in RENAMED.items():
        parent = _section(data, old[:-1], create=False)
        if parent is None or old[-1] not in parent:
            continue
        value = parent.pop(old[-1])
        target = _section(data, new[:-1], create=True)
        assert target is not None
        if new[-1] in target:
            warnings.append(
                f"{env_name(old)} is ignored: it was renamed {env_name(new)}, which is set too"
            )
            continue
        target[new[-1]] = value
        warnings.append(f"{env_name(old)} was renamed {env_name(new)}: use the new name")
    return warnings


def _section(
    data: MutableMapping[str, Any], path: Path, create: bool
) -> MutableMapping[str, Any] | None:
    node = data
    for part in path:
        child = node.get(part)
        if not isinstance(child, MutableMapping):
            if not create or child is not None:
                return None
            child = node[part] = {}
        node = child
    return node

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
    ("stages", "img2img_model"): ("stages", "generate_model"),
    ("stages", "img2img_artifacts"): ("stages", "generate_artifacts"),
    ("autoscaler", "backend"): ("autoscaler", "target"),
}
# Values that were renamed: the field's path → old value → new value (in a list too).
RENAMED_VALUES: Mapping[Path, Mapping[str, str]] = {
    ("worker", "stages"): {"img2img": "generate"},
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
    for path, values in RENAMED_VALUES.items():
        parent = _section(data, path[:-1], create=False)
        if parent is None or path[-1] not in parent:
            continue
        given = parent[path[-1]]
        items = given if isinstance(given, list) else [given]
        if any(isinstance(v, str) and v in values for v in items):
            renamed = [values.get(v, v) if isinstance(v, str) else v for v in items]
            parent[path[-1]] = renamed if isinstance(given, list) else renamed[0]
            moved = ", ".join(
                f"{v} → {values[v]}" for v in items if isinstance(v, str) and v in values
            )
            warnings.append(f"{env_name(path)}: renamed values ({moved}): use the new names")
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

"""docs/configuration.md is generated from the settings tree and kept fresh."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from img2img.config import reference
from img2img.config.settings import Settings


def test_the_page_is_fresh() -> None:
    """Fails when a setting was added, renamed or re-described without regenerating the page
    (`python -m img2img.config.reference`)."""
    assert reference.PAGE.read_text() == reference.markdown(), (
        "docs/configuration.md is stale: run python -m img2img.config.reference"
    )
    assert reference.main(["--check"]) == 0


def leaf_variables(model: type[BaseModel], prefix: str) -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += leaf_variables(ann, f"{prefix}{name.upper()}__")
        else:
            out.append(f"{prefix}{name.upper()}")
    return out


def test_every_field_of_every_section_has_a_row() -> None:
    page = reference.markdown()
    variables = leaf_variables(Settings, "IMG2IMG_")
    assert len(variables) > 100
    for variable in variables:
        assert f"| `{variable}` |" in page


def test_a_row_gives_the_variable_default_bounds_and_description() -> None:
    class Part(BaseModel):
        """A part."""

        size: int = Field(4, ge=1, le=64, description="How | many.")
        mode: Literal["a", "b"] = Field("a", description="Which one.")
        names: list[str] = Field(default_factory=lambda: ["x"], description="Names.")

    class Tree(BaseModel):
        part: Part = Field(default_factory=Part)

    page = reference.markdown(Tree)
    assert "## `part`\n\nA part." in page
    assert "| `IMG2IMG_PART__SIZE` | `4` | ≥ 1; ≤ 64 | How \\| many. |" in page
    assert "| `IMG2IMG_PART__MODE` | `a` | one of `a`, `b` | Which one. |" in page
    assert '| `IMG2IMG_PART__NAMES` | `["x"]` |  | Names. |' in page

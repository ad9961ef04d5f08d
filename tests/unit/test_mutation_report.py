"""`make mutation`'s score, from mutmut's own per-module files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.bench.mutation_report import classify, main, module_figures, report


def test_exit_codes_are_sorted_as_mutmut_sorts_them() -> None:
    assert [classify(c) for c in (1, 3, 0, 5, 33, 36, -24, 34, None, 99)] == [
        "killed",
        "killed",
        "survived",
        "no_tests",
        "no_tests",
        "timeout",
        "timeout",
        "skipped",
        "not_checked",
        "suspicious",
    ]


def test_the_score_counts_a_hang_as_caught_and_an_untested_mutant_against_it() -> None:
    figures = module_figures({"a": 1, "b": 1, "c": 36, "d": 0, "e": 33, "f": 34})
    assert figures["mutants"] == 5  # the skipped one is left out
    assert (figures["killed"], figures["timeout"], figures["survived"]) == (2, 1, 1)
    assert figures["no_tests"] == 1 and figures["score"] == 0.6
    assert module_figures({})["score"] is None


def test_a_line_per_module_a_total_and_the_survivors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "img2img" / "intake").mkdir(parents=True)
    for name, codes in (("keys", {"k1": 1, "k2": 0}), ("params", {"p1": 1, "p2": 1})):
        meta = {"exit_code_by_key": codes, "durations_by_key": {}}
        (tmp_path / "img2img" / "intake" / f"{name}.py.meta").write_text(json.dumps(meta))
    lines, survivors = report(tmp_path)
    assert [(x["module"], x["score"]) for x in lines] == [
        ("img2img/intake/keys.py", 0.5),
        ("img2img/intake/params.py", 1.0),
        ("all", 0.75),
    ]
    assert survivors == ["k2"]
    assert main([str(tmp_path), "--survivors"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert json.loads(printed[2])["module"] == "all" and printed[-1] == "k2"
    assert main([str(tmp_path / "missing")]) == 2

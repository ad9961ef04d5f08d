"""`make mutation`'s score: how many of mutmut's mutants the tests killed, per module.

mutmut (configured in `pyproject.toml`, `[tool.mutmut]`) leaves a `<module>.py.meta` file per
mutated module under `mutants/`, with each mutant's test exit code. This reads them and
prints one JSON line per module and one for the whole set:

    {"module": "img2img/aws/storage.py", "mutants": 60, "killed": 52, "survived": 6,
     "no_tests": 2, "timeout": 0, "score": 0.867}

`score` = (killed + timeout) / mutants: a mutant that makes a test hang was caught too; one
no test reached counts against the score (nothing would notice that change). The survivors'
names follow with `--survivors` (`mutmut show NAME` prints the change).

Run: `python -m infra.bench.mutation_report [--survivors] [mutants]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# mutmut's exit codes (mutmut.stats.status_by_exit_code), the ones that count here.
KILLED = {1, 3}
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {36, 24, -24, 152, 255}
SKIPPED = {34, 37}


def classify(exit_code: int | None) -> str:
    if exit_code is None:
        return "not_checked"
    for name, codes in (
        ("killed", KILLED),
        ("survived", SURVIVED),
        ("no_tests", NO_TESTS),
        ("timeout", TIMEOUT),
        ("skipped", SKIPPED),
    ):
        if exit_code in codes:
            return name
    return "suspicious"


def module_figures(exit_codes: dict[str, int | None]) -> dict[str, Any]:
    """The counts and the score of one module's mutants (skipped ones left out)."""
    counts = Counter(classify(code) for code in exit_codes.values())
    mutants = sum(n for status, n in counts.items() if status != "skipped")
    caught = counts["killed"] + counts["timeout"]
    return {
        "mutants": mutants,
        "killed": counts["killed"],
        "survived": counts["survived"],
        "no_tests": counts["no_tests"],
        "timeout": counts["timeout"],
        "not_checked": counts["not_checked"],
        "score": round(caught / mutants, 3) if mutants else None,
    }


def report(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(a line per module and a total, the survivors' names) from mutmut's files."""
    lines: list[dict[str, Any]] = []
    survivors: list[str] = []
    every: dict[str, int | None] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(root)).removesuffix(".meta")
        lines.append({"module": module, **module_figures(codes)})
        survivors += sorted(k for k, c in codes.items() if classify(c) in ("survived", "no_tests"))
        every.update(codes)
    lines.append({"module": "all", **module_figures(every)})
    return lines, survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="mutants", type=Path)
    parser.add_argument("--survivors", action="store_true", help="list the mutants not killed")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"no {args.root}/: run `make mutation` first", file=sys.stderr)
        return 2
    lines, survivors = report(args.root)
    for line in lines:
        print(json.dumps(line))
    if args.survivors:
        print("\n".join(survivors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

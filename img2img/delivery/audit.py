"""The exactly-once audit: a verdict per upload from everything the pipeline produced.

It is the independent checker of the delivery promise (every upload ends as exactly one
result or one failure record, announced once), so it reads what was produced, never what
the code meant to produce, and shares no decision with the code it checks. For each upload
it is given (`Evidence`, gathered by `infra.local.audit`):

- how many times each outcome object was written: the versions of the result image, the
  result document and the failure record (the results bucket keeps versions, so a second
  write that got through is visible even when it wrote the same bytes);
- every completion message about it that reached the app's queue, repeats included;
- how many times each inference stage produced its output (the versions of its stage
  output, where the stage bucket keeps them): device work, reported as waste, not failure;
- how many flow runs held it (where the runs were read).

A verdict names each problem. `duplicated` counts uploads with any of: both a result and a
failure record, an outcome object written twice, more than one completion message. No I/O
here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for

OutcomeKind = Literal["result", "failure", "both", "none"]

# Problems that mean the upload was delivered more than once (the rest: lost or wrong).
DUPLICATES = ("both outcomes", "written twice", "repeated message")


@dataclass(frozen=True)
class Evidence:
    """What was found for one upload.

    Args:
        image_writes, result_writes, failure_writes: versions of the result image, the
            result document and the failure record (0: absent).
        messages: the completion messages about this upload, each as received.
        stage_outputs: stage name → versions of its output (None: not countable here).
        runs: flow runs whose parameters held this upload (None: runs not read).
    """

    image_writes: int = 0
    result_writes: int = 0
    failure_writes: int = 0
    messages: tuple[Mapping[str, Any], ...] = ()
    stage_outputs: Mapping[str, int] | None = None
    runs: int | None = None


@dataclass(frozen=True)
class Verdict:
    """One upload's outcome as the audit sees it, and what is wrong with it."""

    uri: str
    outcome: OutcomeKind
    problems: tuple[str, ...]
    messages: int
    # Device work done more than once for this upload (sum over stages of versions − 1).
    wasted_device_runs: int | None
    runs: int | None

    @property
    def duplicated(self) -> bool:
        return any(p.startswith(DUPLICATES) for p in self.problems)

    @property
    def lost(self) -> bool:
        return self.outcome == "none"


def judge(ref: ObjectRef, evidence: Evidence, expect_messages: bool) -> Verdict:
    """The verdict on one upload.

    Args:
        expect_messages: completion messages are on, and every outcome should have one.
    """
    has_result = evidence.result_writes > 0
    has_failure = evidence.failure_writes > 0
    outcome: OutcomeKind = (
        "both"
        if has_result and has_failure
        else "result"
        if has_result
        else "failure"
        if has_failure
        else "none"
    )
    problems: list[str] = []
    if outcome == "none":
        problems.append("lost: no result and no failure record")
    if outcome == "both":
        problems.append("both outcomes: a result and a failure record")
    if has_result and evidence.image_writes == 0:
        problems.append("result document without its image")
    if evidence.image_writes and not has_result and not has_failure:
        problems.append("result image without its document")
    if evidence.image_writes and has_failure and not has_result:
        problems.append("both outcomes: a result image beside a failure record")
    for what, writes in (
        ("result image", evidence.image_writes),
        ("result document", evidence.result_writes),
        ("failure record", evidence.failure_writes),
    ):
        if writes > 1:
            problems.append(f"written twice: the {what} has {writes} versions")
    problems.extend(_message_problems(ref, outcome, evidence.messages, expect_messages))
    wasted = (
        None
        if evidence.stage_outputs is None
        else sum(max(n - 1, 0) for n in evidence.stage_outputs.values())
    )
    return Verdict(
        uri=ref.uri,
        outcome=outcome,
        problems=tuple(problems),
        messages=len(evidence.messages),
        wasted_device_runs=wasted,
        runs=evidence.runs,
    )


def _message_problems(
    ref: ObjectRef,
    outcome: OutcomeKind,
    messages: tuple[Mapping[str, Any], ...],
    expected: bool,
) -> list[str]:
    keys = keys_for(ref)
    wanted = {"result": keys.result_meta, "failure": keys.failure}
    problems: list[str] = []
    if expected and outcome in ("result", "failure") and not messages:
        problems.append("unannounced: no completion message")
    if len(messages) > 1:
        problems.append(f"repeated message: {len(messages)} completion messages")
    for message in messages:
        said = message.get("outcome")
        if said not in wanted:
            problems.append(f"wrong message: outcome {said!r}")
        elif message.get("dedup_id") != wanted[said]:
            problems.append(
                f"wrong message: dedup_id {message.get('dedup_id')!r}, expected {wanted[said]!r}"
            )
        elif outcome in ("result", "failure") and said != outcome:
            problems.append(f"wrong message: says {said}, the upload has a {outcome}")
    return problems


def message_owner(message: Mapping[str, Any], refs: Iterable[ObjectRef]) -> ObjectRef | None:
    """Which of `refs` a completion message is about (by its dedup id: the upload's outcome
    document key), or None."""
    dedup = message.get("dedup_id")
    for ref in refs:
        keys = keys_for(ref)
        if dedup in (keys.result_meta, keys.failure):
            return ref
    return None


@dataclass(frozen=True)
class AuditReport:
    """The verdicts on a set of uploads, and their counts."""

    verdicts: tuple[Verdict, ...]
    # Messages on the app's queue about none of the audited uploads.
    stray_messages: int = 0
    problems: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, verdicts: Iterable[Verdict], stray_messages: int = 0) -> AuditReport:
        verdicts = tuple(verdicts)
        problems = tuple(f"{v.uri}: {p}" for v in verdicts for p in v.problems)
        return cls(verdicts=verdicts, stray_messages=stray_messages, problems=problems)

    @property
    def clean(self) -> bool:
        """Every upload exactly one outcome, written once, announced as promised."""
        return not self.problems

    def counts(self) -> dict[str, int]:
        """The figures every JSON line (chaos, demo, benchmarks) carries."""
        v = self.verdicts

        def having(problem: str) -> int:
            return sum(any(p.startswith(problem) for p in x.problems) for x in v)

        wasted = [x.wasted_device_runs for x in v if x.wasted_device_runs is not None]
        counts = {
            "uploads": len(v),
            "results": sum(x.outcome == "result" for x in v),
            "failure_records": sum(x.outcome == "failure" for x in v),
            "lost": sum(x.lost for x in v),
            "duplicated": sum(x.duplicated for x in v),
            "both_outcomes": sum(x.outcome == "both" for x in v),
            "written_twice": having("written twice"),
            "repeated_messages": sum(max(x.messages - 1, 0) for x in v),
            "unannounced": having("unannounced"),
            "wrong_messages": having("wrong message"),
            "stray_messages": self.stray_messages,
        }
        if wasted:
            counts["wasted_device_runs"] = sum(wasted)
        runs = [x.runs for x in v if x.runs is not None]
        if runs:
            counts["runs_max"] = max(runs)
        return counts

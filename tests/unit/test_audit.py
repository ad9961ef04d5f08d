"""The exactly-once audit's verdicts: each problem it must see, and the counts it prints."""

from __future__ import annotations

from typing import Any

from img2img.delivery.audit import AuditReport, Evidence, judge, message_owner
from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for

REF = ObjectRef(bucket="uploads", key="a/cat.png", etag="e1")
OTHER = ObjectRef(bucket="uploads", key="a/dog.png", etag="e2")


def message(ref: ObjectRef, outcome: str = "result") -> dict[str, Any]:
    keys = keys_for(ref)
    return {
        "dedup_id": keys.result_meta if outcome == "result" else keys.failure,
        "outcome": outcome,
    }


RESULT = Evidence(image_writes=1, result_writes=1, messages=(message(REF),))


def test_one_result_written_once_and_announced_once_is_clean() -> None:
    verdict = judge(REF, RESULT, expect_messages=True)
    assert verdict.outcome == "result" and verdict.problems == ()
    assert not verdict.duplicated and not verdict.lost


def test_one_failure_record_announced_once_is_clean() -> None:
    evidence = Evidence(failure_writes=1, messages=(message(REF, "failure"),))
    verdict = judge(REF, evidence, expect_messages=True)
    assert verdict.outcome == "failure" and verdict.problems == ()


def test_no_outcome_is_lost() -> None:
    verdict = judge(REF, Evidence(), expect_messages=True)
    assert verdict.lost and not verdict.duplicated
    assert verdict.problems == ("lost: no result and no failure record",)


def test_a_result_and_a_failure_record_are_a_duplicate() -> None:
    evidence = Evidence(image_writes=1, result_writes=1, failure_writes=1)
    verdict = judge(REF, evidence, expect_messages=False)
    assert verdict.outcome == "both" and verdict.duplicated


def test_a_result_image_beside_a_failure_record_is_a_duplicate() -> None:
    verdict = judge(REF, Evidence(image_writes=1, failure_writes=1), expect_messages=False)
    assert verdict.outcome == "failure" and verdict.duplicated


def test_a_second_write_of_any_outcome_object_is_a_duplicate() -> None:
    for evidence in (
        Evidence(image_writes=2, result_writes=1),
        Evidence(image_writes=1, result_writes=2),
        Evidence(failure_writes=2),
    ):
        verdict = judge(REF, evidence, expect_messages=False)
        assert verdict.duplicated, evidence
        assert any("versions" in p for p in verdict.problems)


def test_a_repeated_message_is_a_duplicate_even_with_one_outcome() -> None:
    evidence = Evidence(image_writes=1, result_writes=1, messages=(message(REF), message(REF)))
    verdict = judge(REF, evidence, expect_messages=True)
    assert verdict.duplicated and verdict.messages == 2


def test_a_missing_or_wrong_message_is_reported_but_is_no_duplicate() -> None:
    unannounced = judge(REF, Evidence(image_writes=1, result_writes=1), expect_messages=True)
    assert unannounced.problems == ("unannounced: no completion message",)
    assert not unannounced.duplicated
    # Messages off: none is expected.
    assert judge(REF, Evidence(image_writes=1, result_writes=1), False).problems == ()
    says_failure = judge(
        REF, Evidence(image_writes=1, result_writes=1, messages=(message(REF, "failure"),)), True
    )
    assert says_failure.problems == ("wrong message: says failure, the upload has a result",)
    bad_id = {"dedup_id": "results/elsewhere.json", "outcome": "result"}
    assert (
        judge(REF, Evidence(1, 1, messages=(bad_id,)), True)
        .problems[0]
        .startswith("wrong message: dedup_id")
    )


def test_half_written_results_are_named() -> None:
    assert judge(REF, Evidence(result_writes=1), False).problems == (
        "result document without its image",
    )
    assert judge(REF, Evidence(image_writes=1), False).problems == (
        "lost: no result and no failure record",
        "result image without its document",
    )


def test_device_work_done_again_is_waste_not_failure() -> None:
    evidence = Evidence(
        image_writes=1, result_writes=1, stage_outputs={"generate": 2, "upscale": 3}
    )
    verdict = judge(REF, evidence, expect_messages=False)
    assert verdict.wasted_device_runs == 3 and verdict.problems == ()
    assert judge(REF, Evidence(1, 1), False).wasted_device_runs is None


def test_messages_are_matched_to_their_upload_by_dedup_id() -> None:
    assert message_owner(message(OTHER), [REF, OTHER]) == OTHER
    assert message_owner(message(REF, "failure"), [REF, OTHER]) == REF
    assert message_owner({"dedup_id": "results/x.json"}, [REF, OTHER]) is None


def test_the_report_counts_each_kind_of_problem() -> None:
    verdicts = [
        judge(REF, RESULT, True),
        judge(OTHER, Evidence(image_writes=1, result_writes=1, failure_writes=1), True),
        judge(ObjectRef(bucket="uploads", key="lost.png", etag="e3"), Evidence(), True),
        judge(
            ObjectRef(bucket="uploads", key="twice.png", etag="e4"),
            Evidence(failure_writes=2),
            True,
        ),
    ]
    report = AuditReport.of(verdicts, stray_messages=2)
    counts = report.counts()
    assert counts["uploads"] == 4
    assert (counts["results"], counts["failure_records"], counts["lost"]) == (1, 1, 1)
    assert counts["duplicated"] == 2 and counts["both_outcomes"] == 1
    assert counts["written_twice"] == 1 and counts["unannounced"] == 1
    assert counts["stray_messages"] == 2 and "wasted_device_runs" not in counts
    assert not report.clean
    assert report.problems[0].startswith(OTHER.uri)
    assert AuditReport.of([verdicts[0]]).clean

"""Outcome keys: per bucket, and never outside their prefix."""

from __future__ import annotations

import pytest

from img2img.events import ObjectRef
from img2img.keys import keys_for, outcome_stem, stem_from_outcome_key, unsafe_key_reason


def ref(key: str, bucket: str = "uploads") -> ObjectRef:
    return ObjectRef(bucket=bucket, key=key, etag="abc")


def test_two_buckets_with_the_same_key_have_different_outcomes() -> None:
    a, b = keys_for(ref("p/cat.jpg", "one")), keys_for(ref("p/cat.jpg", "two"))
    assert a.result != b.result and a.failure != b.failure
    assert a.result == "results/one/p/cat.jpg@abc.png"


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("../ev/../etc/passwd.jpg", "'..' path segments"),
        ("a/./b.png", "'.' path segments"),
        ("a\nb.png", "control characters (0x0a)"),
        ("x" * 1000, "over S3's 1024"),
        ("", "empty"),
    ],
)
def test_unsafe_keys_are_named_and_their_outcome_stays_inside_its_prefix(
    key: str, words: str
) -> None:
    upload = ref(key)
    reason = unsafe_key_reason(upload)
    assert reason is not None and words in reason
    keys = keys_for(upload)
    for derived in (keys.input, keys.stage1, keys.stage2, keys.result, keys.failure):
        segments = derived.split("/")
        assert ".." not in segments and "." not in segments
        assert len(derived.encode()) <= 1024
    assert keys.failure.startswith("failed/uploads/_unsafe/")


def test_ordinary_keys_with_dots_spaces_and_unicode_are_safe() -> None:
    for key in ("a/b.c.png", "photos/my cat ü.jpg", "..hidden/x.png", "a..b/c"):
        assert unsafe_key_reason(ref(key)) is None


def test_outcome_keys_map_back_to_the_uploads_stem() -> None:
    for upload in (ref("p/cat.jpg"), ref("../x.png")):
        keys = keys_for(upload)
        assert stem_from_outcome_key(keys.result_meta) == outcome_stem(upload)
        assert stem_from_outcome_key(keys.failure) == outcome_stem(upload)
        assert stem_from_outcome_key(keys.result) is None


def test_outcome_prefixes_are_where_a_folders_outcomes_are_listed() -> None:
    from img2img.keys import outcome_prefixes

    assert outcome_prefixes("uploads", "a/") == ("results/uploads/a/", "failed/uploads/a/")
    assert outcome_prefixes("uploads") == ("results/uploads/", "failed/uploads/")
    keys = keys_for(ObjectRef(bucket="uploads", key="a/cat.png", etag="e"))
    assert keys.result_meta.startswith(outcome_prefixes("uploads", "a/")[0])
    assert keys.failure.startswith(outcome_prefixes("uploads", "a/")[1])

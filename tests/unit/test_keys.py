"""Outcome keys: per bucket, and never outside their prefix."""

from __future__ import annotations

import pytest

from img2img.intake.events import ObjectRef
from img2img.intake.keys import keys_for, outcome_stem, stem_from_outcome_key, unsafe_key_reason


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
        ("a\nb.png", "characters (U+000A)"),
        ("a\\..\\..\\b.png", "'..' path segments"),  # a backslash separates on Windows
        ("dir\\.\\b.png", "'.' path segments"),
        ("a\x85b.png", "characters (U+0085)"),  # C1: NEXT LINE
        ("a\u2028b.png", "characters (U+2028)"),  # a line break in a log line
        ("invoice_\u202egnp.exe", "characters (U+202E)"),  # reads as "invoice_exe.png"
        ("a\u2067b\u2069.png", "characters (U+2067, U+2069)"),
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
    for derived in (keys.input, keys.generate, keys.upscale, keys.result, keys.failure):
        segments = derived.split("/")
        assert ".." not in segments and "." not in segments
        assert len(derived.encode()) <= 1024
    assert keys.failure.startswith("failed/uploads/_unsafe/")


def test_ordinary_keys_with_dots_spaces_and_unicode_are_safe() -> None:
    for key in (
        "a/b.c.png",
        "photos/my cat ü.jpg",
        "..hidden/x.png",
        "a..b/c",
        "a\\b.png",
        "日本/写真.jpg",
        "a\u00a0b.png",  # no-break space: the first character past the C1 controls
        "emoji/😀.png",
    ):
        assert unsafe_key_reason(ref(key)) is None


def test_outcome_keys_map_back_to_the_uploads_stem() -> None:
    for upload in (ref("p/cat.jpg"), ref("../x.png")):
        keys = keys_for(upload)
        assert stem_from_outcome_key(keys.result_meta) == outcome_stem(upload)
        assert stem_from_outcome_key(keys.failure) == outcome_stem(upload)
        assert stem_from_outcome_key(keys.result) is None


def test_outcome_prefixes_are_where_a_folders_outcomes_are_listed() -> None:
    from img2img.intake.keys import outcome_prefixes

    assert outcome_prefixes("uploads", "a/") == ("results/uploads/a/", "failed/uploads/a/")
    assert outcome_prefixes("uploads") == ("results/uploads/", "failed/uploads/")
    keys = keys_for(ObjectRef(bucket="uploads", key="a/cat.png", etag="e"))
    assert keys.result_meta.startswith(outcome_prefixes("uploads", "a/")[0])
    assert keys.failure.startswith(outcome_prefixes("uploads", "a/")[1])


def test_each_unsafe_key_is_refused_in_words_that_name_the_problem() -> None:
    def reason(key: str) -> str | None:
        return unsafe_key_reason(ObjectRef(bucket="b", key=key, etag="e"))

    assert reason("") == "the object key is empty"
    assert reason("a\x7fb\x01") == (
        "object key 'a\\x7fb\\x01' contains control, line-separator or bidirectional "
        "characters (U+0001, U+007F)"
    )
    assert reason("./a/..") == (
        "object key './a/..' has '.' and '..' path segments, which would resolve outside "
        "their folder"
    )
    assert reason("a/\xa0b") is None  # the first character past the C1 controls


def test_the_longest_safe_key_fills_s3s_1024_bytes_exactly() -> None:
    """results/<bucket>/<key>@<tag>.json may be 1,024 bytes and not one more."""
    wrap = len("results/") + len("b/") + len("@e") + len(".json")
    longest = ObjectRef(bucket="b", key="k" * (1024 - wrap), etag="e")
    assert unsafe_key_reason(longest) is None
    assert len(keys_for(longest).result_meta.encode()) == 1024
    one_more = longest.model_copy(update={"key": longest.key + "k"})
    assert unsafe_key_reason(one_more) == (
        f"object key is {len(one_more.key)} bytes; its outcome key would be 1025 bytes, over "
        "S3's 1024"
    )


def test_an_unsafe_keys_outcome_is_named_by_its_digest_and_a_short_clean_tag() -> None:
    import hashlib

    key = "a/../x\udc80"  # an unpaired surrogate, as a badly decoded event may carry
    ref = ObjectRef(bucket="b", key=key, etag="e/1" * 40)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    tag = ("e_1" * 40)[:64]
    assert outcome_stem(ref) == f"b/_unsafe/{digest}@{tag}"
    # A safe key keeps its name; a "/" in its tag (a version id may hold one) becomes "_".
    assert keys_for(ObjectRef(bucket="b", key="k", etag="x/y")).result == "results/b/k@x_y.png"

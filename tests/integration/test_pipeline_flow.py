"""The pipeline flow against a real moto server, a real Prefect API and tiny real models."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from flows.pipeline import img2img_pipeline
from img2img.intake.keys import keys_for
from tests.conftest import AwsEnv
from tests.integration.helpers import (
    FAST,
    audited,
    drain,
    outcome,
    png,
    result_keys,
    upload,
)

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_upload_to_result_with_timings_and_artifacts(
    aws: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every view on (the local stack's): task runs, progress, chart, per-image events.
    for name in ("RUN_PROGRESS", "RUN_CHART", "IMAGE_EVENTS", "TASK_RUNS"):
        monkeypatch.setenv(f"IMG2IMG_MONITOR__{name}", "true")
    clients, settings = aws
    st = settings.storage
    now = datetime.now(UTC)
    ref = upload(
        clients,
        st.uploads_bucket,
        "photos/my cat.png",
        png((120, 80)),
        {**FAST, "prompt": "caf%C3%A9 cat"},
    ).model_copy(update={"event_time": now - timedelta(seconds=2)})
    # A message replayed from the dead-letter queue two days after its upload.
    replayed = upload(clients, st.uploads_bucket, "photos/old.png", png((64, 64))).model_copy(
        update={"event_time": now - timedelta(days=2)}
    )

    state = img2img_pipeline(objects=[ref, replayed], return_state=True)

    assert state.is_completed(), state.message
    status, meta = outcome(clients, st.results_bucket, ref)
    assert status == "completed"
    image = Image.open(
        io.BytesIO(
            clients.s3.get_object(Bucket=st.results_bucket, Key=keys_for(ref).result)["Body"].read()
        )
    )
    # Stage 1 runs at the static shape; stage 2 multiplies each side by four.
    assert image.size == (settings.stages.width * 4, settings.stages.height * 4)
    assert meta["params"]["prompt"] == "café cat" and meta["params"]["steps"] == 4
    timings = meta["timings_ms"]
    for stage in ("queue_wait", "copy", "download", "preprocess", "generate", "upscale"):
        assert timings[stage] >= 0, stage
    # The outcome check runs beside the copy: its column is only what it took beyond it.
    assert timings.get("check", 0.0) < timings["copy"] + 1000, timings
    # Every millisecond of the image's life is in one column: the columns add up.
    # queue_wait is there whole and hop by hop (intake, batching, claim, run_start).
    parts = sum(v for k, v in timings.items() if k not in ("total", "queue_wait"))
    assert parts == pytest.approx(timings["total"], abs=2.0), timings
    # Stage outputs are kept in the directory bucket under entropy-free prefixes.
    kept = result_keys(clients, st.stage_bucket)
    assert keys_for(ref).input in kept and keys_for(ref).generate in kept

    run_id = state.state_details.flow_run_id
    table: Any = _artifact_data(run_id, "img2img-stage-timings")
    assert table[0]["image"] == "my cat.png" and table[0]["upscale"] > 0
    # "batch" says how many images shared each stage's device call ("1/1": alone).
    assert re.fullmatch(r"\d+/\d+", table[0]["batch"]), table[0]
    columns = [k for k in table[0] if k not in ("image", "total", "batch")]
    assert sum(table[0][k] or 0 for k in columns) == pytest.approx(table[0]["total"], abs=8)
    assert [r["image"] for r in table[-3:]] == ["(p50)", "(p95)", "(max)"]
    # The replayed image keeps its queue wait as measured (two days) in its own row, but
    # the percentiles leave it out.
    hops = ("intake", "batching", "claim", "start")
    assert sum(table[1][h] or 0 for h in hops) > 86_400_000
    assert table[-3]["total"] < 3_600_000
    summary = _artifact_description(run_id, "img2img-stage-timings")
    assert "data:image/png;base64," in summary and "where the time went" in summary
    assert "1 image(s) carry an event time outside" in summary
    assert _artifact_data(run_id, "img2img-batch-progress") == 100.0

    event = _wait_for_event("img2img.batch.completed", run_id)
    assert event.payload["completed"] == 2 and event.payload["stale_events"] == 1
    assert len(event.payload["e2e_ms"]) == 1 and event.payload["e2e_ms"][0] >= 2000
    assert event.payload["stage_ms"]["upscale"][0] > 0
    assert _task_runs(run_id) == {
        "copy-to-directory-bucket",
        "preprocess",
        "generate-img2img",
        "upscale-upscale",
        "postprocess",
        "publish-timings",
    }
    image_event = _wait_for_event("img2img.image.completed", run_id)
    assert image_event.resource.name in ("photos/my cat.png", "photos/old.png")


def test_lean_run_records_only_the_flow_run_and_its_batch_event(
    aws: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At scale the steps run inside the flow run (no task runs), with no artifacts: the
    same outcomes, the same retry policy, and the batch event the fleet view reads."""
    for name in ("TASK_RUNS", "RUN_ARTIFACTS", "RUN_PROGRESS", "RUN_CHART", "IMAGE_EVENTS"):
        monkeypatch.setenv(f"IMG2IMG_MONITOR__{name}", "false")
    clients, settings = aws
    st = settings.storage
    good = upload(clients, st.uploads_bucket, "lean/good.png", png((96, 64)), FAST)
    bad = upload(clients, st.uploads_bucket, "lean/bad.png", b"not an image")

    state = img2img_pipeline(objects=[good, bad], return_state=True)

    assert state.is_failed() and "1 of 2 images failed" in str(state.message)
    assert outcome(clients, st.results_bucket, good)[0] == "completed"
    status, record = outcome(clients, st.results_bucket, bad)
    assert status == "failed" and record["stage"] == "preprocess"
    run_id = state.state_details.flow_run_id
    assert _task_runs(run_id, expected=0) == set()
    event = _wait_for_event("img2img.batch.failed", run_id)
    assert event.payload["completed"] == 1 and event.payload["failed"] == 1
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        mine = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert mine == []


def test_a_first_attempt_looks_up_no_kept_outputs_and_encodes_each_image_once(
    aws: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's first attempt cannot have kept stage outputs: it does not look for them;
    its outcome checks go out beside the copies; the result is the PNG kept as stage 2's
    output (encoded once: stage 1's output and the result, two encodes an image)."""
    from img2img.pipeline import steps
    from tasks.runtime import get_runtime

    clients, settings = aws
    st = settings.storage
    refs = [
        upload(clients, st.uploads_bucket, f"once/{i}.png", png((64, 64)), FAST) for i in (1, 2)
    ]
    calls: list[tuple[str, str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params.get("Bucket", ""), params.get("Key", "")))

    get_runtime().clients.s3.meta.events.register("before-parameter-build.s3", record)
    encoded: list[tuple[int, int]] = []
    encode = steps.encode_png

    def counting(image: Image.Image) -> bytes:
        encoded.append(image.size)
        return encode(image)

    monkeypatch.setattr(steps, "encode_png", counting)

    state = img2img_pipeline(objects=refs, return_state=True)

    assert state.is_completed(), state.message
    kept = {k for ref in refs for k in (keys_for(ref).generate, keys_for(ref).upscale)}
    reads = [(op, key) for op, bucket, key in calls if bucket == st.stage_bucket]
    assert not [r for r in reads if r[1] in kept and r[0] != "PutObject"], reads
    assert sorted(op for op, key in reads if key in kept) == ["PutObject"] * 4, reads
    big = (settings.stages.width * 4, settings.stages.height * 4)
    assert sorted(encoded) == sorted(
        [(settings.stages.width, settings.stages.height)] * 2 + [big] * 2
    )
    for ref in refs:
        stage_png = clients.s3.get_object(Bucket=st.stage_bucket, Key=keys_for(ref).upscale)
        result_png = clients.s3.get_object(Bucket=st.results_bucket, Key=keys_for(ref).result)
        assert stage_png["Body"].read() == result_png["Body"].read()
    # Each upload's two outcome lookups (its result document, its failure record) were made.
    heads = {key for op, bucket, key in calls if op == "HeadObject" and bucket == st.results_bucket}
    for ref in refs:
        assert {keys_for(ref).result_meta, keys_for(ref).failure} <= heads


def _task_runs(run_id: Any, expected: int = 6) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    # Task runs reach the database through events: give them a moment (when none are
    # expected, long enough for a stray one to show).
    names: set[str] = set()
    for _ in range(20 if expected else 6):
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        names = {r.name.rsplit("-", 1)[0] for r in runs}  # "<task name>-<suffix>"
        if expected and len(names) >= expected:
            break
        time.sleep(0.5)
    return names


def _artifact(run_id: Any, key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    mine = [a for a in artifacts if a.flow_run_id == run_id]
    assert mine, f"no {key} artifact for the run"
    return mine[0]


def _artifact_data(run_id: Any, key: str) -> Any:
    data = _artifact(run_id, key).data
    return json.loads(data) if key.endswith("timings") and isinstance(data, str) else data


def _artifact_description(run_id: Any, key: str) -> str:
    return str(_artifact(run_id, key).description)


def _wait_for_event(name: str, run_id: Any) -> Any:
    """The event `name` related to the flow run (events reach the API shortly after)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    related = EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"])
    for _ in range(40):
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(event=EventNameFilter(name=[name]), related=related), limit=5
            )
        if page.events:
            return page.events[0]
        time.sleep(0.5)
    raise AssertionError(f"no {name} event for run {run_id}")


def test_bad_images_get_failure_records_and_good_ones_finish(aws: AwsEnv) -> None:
    clients, settings = aws
    st = settings.storage
    good = [
        upload(clients, st.uploads_bucket, f"batch/good-{i}.png", png((64 + 8 * i, 64)))
        for i in range(2)
    ]
    corrupt = png((64, 64))
    bad = {
        "corrupt": upload(
            clients, st.uploads_bucket, "batch/corrupt.png", corrupt[: len(corrupt) // 2]
        ),
        "empty": upload(clients, st.uploads_bucket, "batch/empty.png", b""),
        "not-image": upload(clients, st.uploads_bucket, "batch/notes.png", b"hello, world"),
        "too-big": upload(clients, st.uploads_bucket, "batch/huge.png", png((7000, 6000))),
        "bad-param": upload(
            clients, st.uploads_bucket, "batch/param.png", png(), {**FAST, "strength": "1.5"}
        ),
    }

    state = img2img_pipeline(objects=[*good, *bad.values()], return_state=True)

    assert state.is_failed()
    assert "5 of 7 images failed" in str(state.message)
    for ref in good:
        assert outcome(clients, st.results_bucket, ref)[0] == "completed"
    reasons = {}
    for name, ref in bad.items():
        status, record = outcome(clients, st.results_bucket, ref)
        assert status == "failed", name
        assert record["stage"] == "preprocess" and record["retryable"] is False
        assert record["source"] == ref.uri
        reasons[name] = record["reason"]
    assert "corrupt" in reasons["corrupt"]
    assert "empty (0 bytes)" in reasons["empty"]
    assert "no known image format" in reasons["not-image"]
    assert "42000000 pixels; the limit is 40000000" in reasons["too-big"]
    assert "metadata 'strength'" in reasons["bad-param"] and "'1.5'" in reasons["bad-param"]


def test_a_batch_run_twice_writes_each_outcome_once(aws: AwsEnv) -> None:
    clients, settings = aws
    st = settings.storage
    ref = upload(clients, st.uploads_bucket, "twice/a.png", png())
    assert img2img_pipeline(objects=[ref], return_state=True).is_completed()
    before = clients.s3.head_object(Bucket=st.results_bucket, Key=keys_for(ref).result)

    second = img2img_pipeline(objects=[ref, ref], return_state=True)

    assert second.is_completed()
    assert "0 completed" in str(second.message)
    assert "1 already processed" in str(second.message)
    after = clients.s3.head_object(Bucket=st.results_bucket, Key=keys_for(ref).result)
    assert after["ETag"] == before["ETag"] and after["LastModified"] == before["LastModified"]
    assert result_keys(clients, st.results_bucket) == sorted(
        [keys_for(ref).result, keys_for(ref).result_meta]
    )


def test_when_retries_are_spent_the_images_get_retryable_failure_records(
    aws: AwsEnv, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 throttles every write into the directory bucket's `input/` for as long as the run
    lasts: the copy step is retried (each of its retries, botocore's own turned off), then
    its images fail with records that say `retryable: true`, so they can be submitted
    again; the rest of the run (the failure records' own writes) goes through."""
    from infra.chaos.faultproxy import FaultProxy
    from tasks.policy import IO_DELAYS_S
    from tasks.runtime import reset_runtime

    clients, settings = aws
    st = settings.storage
    refs = [upload(clients, st.uploads_bucket, f"spent/{i}.png", png()) for i in range(2)]
    proxy = FaultProxy(moto_url, error_rate=1.0, only=lambda _m, path: "/input/" in path)
    proxy.start()
    try:
        monkeypatch.setenv("IMG2IMG_AWS__ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("IMG2IMG_AWS__MAX_ATTEMPTS", "1")
        reset_runtime()
        state = img2img_pipeline(objects=refs, return_state=True)
    finally:
        proxy.stop()
        reset_runtime()

    assert state.is_failed() and "2 of 2 images failed" in str(state.message)
    # Every try of the copy was refused: the first and each retry, per image.
    assert proxy.injected >= len(refs) * (1 + len(IO_DELAYS_S)), proxy.injected
    for ref in refs:
        status, record = outcome(clients, st.results_bucket, ref)
        assert status == "failed", ref.key
        assert record["stage"] == "copy" and record["retryable"] is True, record
        assert "SlowDown" in record["reason"] or "InternalError" in record["reason"], record
    assert audited(clients, settings, refs).problems == ()


def test_missing_upload_is_a_failure_record(aws: AwsEnv) -> None:
    clients, settings = aws
    from img2img.intake.events import ObjectRef

    ref = ObjectRef(bucket=settings.storage.uploads_bucket, key="gone.png", etag="abc")
    state = img2img_pipeline(objects=[ref], return_state=True)
    assert state.is_failed()
    status, record = outcome(clients, settings.storage.results_bucket, ref)
    assert status == "failed" and record["stage"] == "copy"


def test_pipeline_runs_on_the_torchscript_backend(
    aws: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Neuron code path (traced parts, manifest, static-shape checks) end to end, with
    the stages compiled on first use into the model cache; a request the compiled shape
    cannot serve becomes one failure record that names both shapes."""
    from tasks.runtime import reset_runtime

    clients, settings = aws
    monkeypatch.setenv("IMG2IMG_STAGES__BACKEND", "torchscript")
    reset_runtime()
    st = settings.storage
    good = upload(clients, st.uploads_bucket, "ts/good.png", png((80, 64)))
    no_cfg = upload(
        clients, st.uploads_bucket, "ts/no-guidance.png", png(), {**FAST, "guidance": "1.0"}
    )

    state = img2img_pipeline(objects=[good, no_cfg], return_state=True)

    assert state.is_failed() and "1 failed" in str(state.message), state.message
    status, meta = outcome(clients, st.results_bucket, good)
    assert status == "completed" and meta["timings_ms"]["upscale"] > 0
    image = Image.open(
        io.BytesIO(
            clients.s3.get_object(Bucket=st.results_bucket, Key=keys_for(good).result)[
                "Body"
            ].read()
        )
    )
    assert image.size == (settings.stages.width * 4, settings.stages.height * 4)
    status, record = outcome(clients, st.results_bucket, no_cfg)
    assert status == "failed" and record["stage"] == "generate"
    assert "[2, 4, 16, 16]" in record["reason"] and "[1, 4, 16, 16]" in record["reason"]
    compiled = sorted(p.name for p in (settings.stages.model_cache_dir / "compiled").iterdir())
    assert any(name.startswith("torchscript-generate-64x64") for name in compiled)
    assert any(name.startswith("torchscript-upscale-64x64") for name in compiled)


@pytest.fixture
def announced(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> str:
    """Completion messages on: the local topic and the app's queue; yields the queue URL."""
    from infra.local.resources import ensure_notifications
    from tasks.runtime import reset_runtime

    topic, queue = ensure_notifications(aws.clients)
    monkeypatch.setenv("IMG2IMG_NOTIFY__TOPIC_ARN", topic)
    reset_runtime()
    return queue


def test_every_outcome_of_a_mixed_batch_is_announced_once(aws: AwsEnv, announced: str) -> None:
    from img2img.intake.events import ObjectRef

    clients, settings = aws
    st = settings.storage
    good = upload(
        clients, st.uploads_bucket, "mixed/good.png", png(), {**FAST, "request-id": "req-good"}
    )
    bad = upload(
        clients, st.uploads_bucket, "mixed/bad.png", b"not an image", {"request-id": "req-bad"}
    )
    gone = ObjectRef(bucket=st.uploads_bucket, key="mixed/gone.png", etag="abc")

    first = img2img_pipeline(objects=[good, bad, gone], return_state=True)
    # The same batch again (a redelivered event, a second dispatcher): no new messages.
    again = img2img_pipeline(objects=[good, bad, gone], return_state=True)

    assert first.is_failed() and again.is_completed()
    received = drain(clients.sqs, announced)
    messages = {m["upload"]["key"]: m for m in received}
    assert len(received) == 3
    assert sorted(messages) == ["mixed/bad.png", "mixed/gone.png", "mixed/good.png"]
    ok = messages["mixed/good.png"]
    assert ok["outcome"] == "result" and ok["request_id"] == "req-good"
    assert ok["result"]["uri"] == f"s3://{st.results_bucket}/{keys_for(good).result}"
    assert ok["timings_ms"]["upscale"] > 0 and ok["flow_run_id"]
    failed = messages["mixed/bad.png"]
    assert failed["outcome"] == "failure" and failed["request_id"] == "req-bad"
    assert failed["failure"]["stage"] == "preprocess" and not failed["failure"]["retryable"]
    assert "no known image format" in failed["failure"]["reason"]
    assert messages["mixed/gone.png"]["failure"]["stage"] == "copy"
    assert messages["mixed/gone.png"]["request_id"] is None
    # The outcome documents carry the caller's id too, for apps that poll.
    assert outcome(clients, st.results_bucket, good)[1]["request_id"] == "req-good"


def test_a_refused_message_fails_the_run_but_keeps_the_outcome(
    aws: AwsEnv, announced: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.runtime import reset_runtime

    clients, settings = aws
    st = settings.storage
    ref = upload(clients, st.uploads_bucket, "refused/a.png", png(), {**FAST, "request-id": "r"})
    monkeypatch.setenv("IMG2IMG_NOTIFY__TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:gone")
    reset_runtime()

    state = img2img_pipeline(objects=[ref], return_state=True)

    assert state.is_failed()
    assert "1 completion message(s) not sent" in str(state.message)
    assert "gone" in str(state.message)
    assert outcome(clients, st.results_bucket, ref)[0] == "completed"

    # Once the topic is right, a run of the same upload announces what was missing.
    monkeypatch.setenv("IMG2IMG_NOTIFY__TOPIC_ARN", _topic(aws))
    reset_runtime()
    assert img2img_pipeline(objects=[ref], return_state=True).is_completed()
    messages = drain(clients.sqs, announced)
    assert [m["request_id"] for m in messages] == ["r"]


def _topic(aws: AwsEnv) -> str:
    return aws.clients.sns.list_topics()["Topics"][0]["TopicArn"]


def _rows_of_run(run_id: Any) -> dict[str, int]:
    """Rows the test server's database (SQLite) holds for one flow run, per growing table,
    once the writes that reach it through events and batched logs have settled (its final
    events in, then unchanged for 6 s, longer than the event persister's flush interval;
    at most 60 s). Counted by the run's id, so another run's late rows cannot
    land in this one's figures."""
    import sqlite3

    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    path = str(PREFECT_API_DATABASE_CONNECTION_URL.value()).split(":///", 1)[1]
    run = str(run_id)
    events = "SELECT DISTINCT event_id FROM event_resources WHERE resource_id = :resource"
    queries = {
        "flow_run": "SELECT count(*) FROM flow_run WHERE id = :run",
        "flow_run_state": "SELECT count(*) FROM flow_run_state WHERE flow_run_id = :run",
        "task_run": "SELECT count(*) FROM task_run WHERE flow_run_id = :run",
        "task_run_state": "SELECT count(*) FROM task_run_state WHERE task_run_id IN "
        "(SELECT id FROM task_run WHERE flow_run_id = :run)",
        # INFO and below: a transient fault's retry warning (a slow endpoint under the
        # parallel suite's load) is the fault's, not the run's size's.
        "log": "SELECT count(*) FROM log WHERE flow_run_id = :run AND level < 30",
        "artifact": "SELECT count(*) FROM artifact WHERE flow_run_id = :run",
        "events": f"SELECT count(*) FROM ({events})",
        "event_resources": f"SELECT count(*) FROM event_resources WHERE event_id IN ({events})",
    }

    # The run's last events: its end and its batch event. Until both are in, the event
    # persister (which writes every few seconds, later under load) has more to write.
    final = (
        f"SELECT count(DISTINCT e.event) FROM events e WHERE e.id IN ({events}) "
        "AND e.event IN ('prefect.flow-run.Completed', 'img2img.batch.completed')"
    )
    args = {"run": run, "resource": f"prefect.flow-run.{run}"}

    def count() -> tuple[dict[str, int], bool]:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            rows = {t: db.execute(q, args).fetchone()[0] for t, q in queries.items()}
            return rows, db.execute(final, args).fetchone()[0] == 2

    (last, ended), same_since = count(), time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (ended and time.monotonic() - same_since >= 6.0):
        time.sleep(0.5)
        now, ended = count()
        if now != last:
            last, same_since = now, time.monotonic()
    assert ended, f"the run's final events never reached the database: {last}"
    return last


def test_a_run_of_128_images_writes_no_more_prefect_rows_than_a_run_of_8(
    aws: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a run costs the Prefect server does not grow with its images: the flow run, its
    states, its task runs, logs, artifacts and events are per run (per-image figures go
    into the run's artifacts and its batch event, once)."""
    for key, value in {
        "IMG2IMG_STAGES__BACKEND": "simulated",
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "1",
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "1",
        "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0",
    }.items():
        monkeypatch.setenv(key, value)
    clients, settings = aws
    st = settings.storage
    body = png((96, 64))
    grown = {}
    for size in (8, 128):
        refs = [
            upload(clients, st.uploads_bucket, f"rows{size}/{i}.png", body, FAST)
            for i in range(size)
        ]
        state = img2img_pipeline(objects=refs, return_state=True)
        assert state.is_completed()
        grown[size] = _rows_of_run(state.state_details.flow_run_id)
    print(json.dumps({"rows_per_run": grown}))
    assert grown[8]["flow_run"] == grown[128]["flow_run"] == 1
    assert grown[8]["log"] > 0 and grown[8]["events"] > 0  # the counts see the run's rows
    for table, rows in grown[128].items():
        # Events may differ by one or two (a client-side retry, a late heartbeat).
        slack = 2 if table.startswith("event") else 0
        assert rows <= grown[8][table] + slack, (table, grown)

"""The operator's view on a real local stack whose Prefect server runs on PostgreSQL: the
alerts (automations to a webhook), the events, the Prometheus endpoint and `img2img top`,
then the pages in a real browser.

One stack for the module (PostgreSQL, moto, Prefect server, dispatcher, autoscaler, workers
on free loopback ports), a demo batch that completes, one corrupt upload whose batch fails,
and one malformed message that ends in the dead-letter queue: the whole path, on the
database production needs (the other end-to-end tests run on SQLite, the default).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from img2img.observe.scrape import Scraped, parse
from infra.local.postgres import accepting, cluster_for, psql
from infra.local.webhook_listener import serve
from tests.conftest import free_port
from tests.integration import browser
from tests.integration.helpers import img2img, stack_client, stack_env

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    env: dict[str, str]
    api: str
    ui: str
    metrics_url: str
    alerts: io.StringIO
    state: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("operator") / "state"
    alerts = io.StringIO()
    listener = serve("127.0.0.1", 0, alerts)
    prefect_port, metrics_port, postgres_port = free_port(), free_port(), free_port()
    env = stack_env(
        state,
        {
            "IMG2IMG_LOCAL__PREFECT_PORT": str(prefect_port),
            "IMG2IMG_LOCAL__METRICS_PORT": str(metrics_port),
            "IMG2IMG_LOCAL__DATABASE": "postgres",
            "IMG2IMG_LOCAL__POSTGRES_PORT": str(postgres_port),
            "IMG2IMG_LOCAL__ALERT_WEBHOOK_URL": (f"http://127.0.0.1:{listener.server_port}/alerts"),
            "IMG2IMG_STAGES__MODEL_CACHE_DIR": str(model_cache),
            "IMG2IMG_SCALING__INTERVAL_S": "1",
            "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "600",
            # Refresh the fleet view at every tick, and call a pool starved as soon as a
            # host is wanted with no worker online: the first cold start shows it.
            "IMG2IMG_MONITOR__FLEET_INTERVAL_S": "5",
            "IMG2IMG_MONITOR__STARVED_AFTER_S": "0",
        },
    )
    base = f"http://127.0.0.1:{prefect_port}"
    try:
        up = img2img(["local", "up"], env, 300)
        assert up.returncode == 0, up.stderr[-3000:]
        yield Stack(
            env, f"{base}/api", base, f"http://127.0.0.1:{metrics_port}/metrics", alerts, state
        )
    finally:
        img2img(["local", "down"], env, 120)
        listener.shutdown()
        cluster = cluster_for(state, "127.0.0.1", postgres_port)
        stopped = not accepting(cluster)
        shutil.rmtree(cluster.data.parent, ignore_errors=True)
    assert stopped, "local down left PostgreSQL running"


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> dict[str, Any]:
    """A demo batch that completes, a corrupt upload, a malformed message; returns the
    demo's summary once the corrupt upload has its failure record."""
    demo = img2img(["demo", "--images", "3", "--json", "--timeout", "300"], stack.env, 600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary: dict[str, Any] = json.loads(demo.stdout.strip().splitlines()[-1])
    s3, sqs = _aws(stack, "s3"), _aws(stack, "sqs")
    s3.put_object(Bucket="img2img-uploads", Key="broken/half.png", Body=b"\x89PNG\r\n\x1a\n-cut")
    url = sqs.get_queue_url(QueueName="img2img-ingest")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="this is not an S3 event")
    _until(lambda: _failure_records(s3), "the corrupt upload's failure record", 180)
    return summary


def test_the_prefect_server_keeps_its_data_in_postgresql(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    status = json.loads(img2img(["local", "status"], stack.env, 60).stdout)
    assert status["postgres"]["running"] and status["postgres"]["healthy"]
    port = int(stack.env["IMG2IMG_LOCAL__POSTGRES_PORT"])
    cluster = cluster_for(stack.state, "127.0.0.1", port)
    runs = int(psql(cluster, "prefect", "SELECT count(*) FROM flow_run").strip())
    artifacts = psql(cluster, "prefect", "SELECT DISTINCT key FROM artifact").split()
    assert runs >= 2  # the demo's batch and the corrupt upload's
    assert {"img2img-stage-timings", "img2img-fleet"} <= set(artifacts)
    assert "pg_trgm" in psql(cluster, "prefect", "SELECT extname FROM pg_extension").split()
    # Only the Prefect server was given the database URL (it holds the password).
    env_out = img2img(["local", "env"], stack.env, 60).stdout
    assert "DATABASE_CONNECTION_URL" not in env_out and cluster.password not in env_out


def test_alerts_arrive_at_the_webhook_and_events_name_the_pool(
    stack: Stack, traffic: dict[str, Any]
) -> None:
    def subjects() -> list[str]:
        lines = [json.loads(line) for line in stack.alerts.getvalue().splitlines()]
        return [str(line["body"].get("subject", "")) for line in lines]

    def all_three() -> bool:
        got = subjects()
        return (
            any("Failed" in s for s in got)
            and any("no ready worker" in s for s in got)
            and any("dead-letter queue" in s for s in got)
        )

    _until(all_three, f"the three alerts (so far: {subjects()})", 120)

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api}), get_client(sync_client=True) as client:
        pool_id = str(client.read_work_pool("inf2").id)
        on_pool = EventRelatedFilter(id=[f"prefect.work-pool.{pool_id}"])

        def events(name: str, **kw: Any) -> list[Any]:
            page = client.read_events(
                EventFilter(event=EventNameFilter(name=[name]), **kw), limit=50
            )
            return list(page.events)

        # A run's events reach the API shortly after its state does: wait for them.
        done = _until(
            lambda: events("img2img.batch.completed", related=on_pool), "batch.completed", 30
        )
        failed = _until(lambda: events("img2img.batch.failed", related=on_pool), "batch.failed", 30)
        scaled = events("img2img.autoscaler.scaled")
    assert sum(e.payload["completed"] for e in done) >= 3
    assert failed and failed[0].payload["failed_at"] == {"preprocess": 1}
    assert scaled and all(e.resource.id == f"prefect.work-pool.{pool_id}" for e in scaled)
    related = {r.id for r in scaled[0].related if r.role == "deployment"}
    assert len(related) == 1 and related.pop().startswith("prefect.deployment.")


def test_prometheus_endpoint_and_top_show_the_fleet(stack: Stack, traffic: dict[str, Any]) -> None:
    def scraped() -> Scraped | None:
        import urllib.request

        with urllib.request.urlopen(stack.metrics_url, timeout=5) as response:
            got = parse(response.read().decode())
        ok = (
            got.images.get("completed", 0) >= 3
            and got.failures.get("preprocess", 0) >= 1
            and got.gauges.get("img2img_dead_letter_messages", 0) >= 1
            and got.gauges.get("img2img_cost_per_image_usd", 0) > 0
        )
        return got if ok else None

    got = _until(scraped, "the batches and the dead letter in /metrics", 90)
    assert got.stage_mean_s["upscale"] > 0 and got.stage_mean_s["generate"] > 0
    assert got.gauges["img2img_hosts_wanted"] >= 1
    # The same figures went to CloudWatch (moto's, on the local stack).
    cloudwatch = _aws(stack, "cloudwatch")
    names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="img2img")["Metrics"]}
    assert {"CostPerImage", "ImagesPerMinute", "EndToEndP95", "DeadLetterMessages"} <= names

    top = img2img(["top", "--once", "--url", stack.metrics_url], stack.env, 60)
    assert top.returncode == 0, top.stderr
    assert "cost per image" in top.stdout and "upscale" in top.stdout

    bad = img2img(["top", "--once", "--url", "http://127.0.0.1:9/metrics"], stack.env, 60)
    assert bad.returncode == 1 and "cannot read http://127.0.0.1:9/metrics" in bad.stderr


def test_the_views_render_in_a_real_browser(
    stack: Stack, traffic: dict[str, Any], tmp_path: Path
) -> None:
    missing = browser.available()
    assert missing is None, missing
    shots = Path(os.environ.get("IMG2IMG_SCREENSHOTS", tmp_path))
    completed_run = traffic["flow_runs"][0]
    failed_summary = _latest_artifact(stack, "img2img-stage-timings", failed=True)

    def fleet_with_chart() -> dict[str, Any] | None:
        artifact = _latest_artifact(stack, "img2img-fleet")
        return artifact if "data:image" in str(artifact["data"]) else None

    fleet = _until(fleet_with_chart, "a fleet artifact with its chart", 60)

    with browser.chromium() as driver:
        # The run's page: its Artifacts tab lists the progress (the flow run's own artifact)
        # and the task runs' table and summary.
        driver.get(f"{stack.ui}/runs/flow-run/{completed_run}")
        tab = browser.wait_for(
            driver,
            lambda d: [e for e in d.find_elements("css selector", "li") if e.text == "Artifacts"],
            "the run's Artifacts tab",
        )
        tab[0].click()
        # The demo's 3 uploads may go in one run or several (a batch leaves as soon as the
        # pool can take it): the run's progress counts its own images.
        held = _images_of(stack, completed_run)
        browser.wait_for(
            driver,
            lambda d: f"{held} of {held} images have an outcome" in browser.page_text(d),
            "the run's progress artifact in its Artifacts tab",
        )
        browser.shoot(driver, shots, "run-artifacts")

        # One artifact a run: the summary (verdict, waterfall) above the timing table.
        table = _latest_artifact(stack, "img2img-stage-timings", run=completed_run)
        driver.get(f"{stack.ui}/artifacts/artifact/{table['id']}")
        browser.wait_for(
            driver, lambda d: any(w > 300 for _, w in browser.loaded_images(d)), "the waterfall"
        )
        text = browser.page_text(driver)
        assert "slowest stage" in text and "where the time went" in text
        browser.shoot(driver, shots, "run-summary")
        rows = browser.wait_for(
            driver,
            lambda d: d.find_elements("css selector", "table tbody tr"),
            "the timing table's rows",
        )
        assert len(rows) >= held + 3  # the run's images, then p50, p95, max
        assert "(p95)" in browser.page_text(driver) and "upscale" in browser.page_text(driver)
        driver.execute_script("arguments[0].scrollIntoView();", rows[0])
        browser.shoot(driver, shots, "run-timings")

        progress = _latest_artifact(stack, "img2img-batch-progress", run=completed_run)
        driver.get(f"{stack.ui}/artifacts/artifact/{progress['id']}")
        # The page draws the bar and its description as they load: wait for both.
        browser.wait_for(
            driver,
            lambda d: all(
                t in browser.page_text(d)
                for t in ("100%", f"{held} of {held} images have an outcome")
            ),
            "progress at 100% with its description",
        )
        browser.shoot(driver, shots, "run-progress")

        driver.get(f"{stack.ui}/artifacts/artifact/{failed_summary['id']}")
        browser.wait_for(
            driver, lambda d: "failures" in browser.page_text(d), "the failed batch's reasons"
        )
        assert "broken/half.png" in browser.page_text(driver)
        browser.shoot(driver, shots, "run-failed")

        driver.get(f"{stack.ui}/artifacts/artifact/{fleet['id']}")
        browser.wait_for(
            driver, lambda d: any(w > 300 for _, w in browser.loaded_images(d)), "the fleet chart"
        )
        text = browser.page_text(driver)
        assert "cost per image" in text and "images/min" in text
        driver.set_window_size(1280, 1500)  # the figures and the chart below them
        browser.shoot(driver, shots, "fleet")
    for name in ("run-artifacts", "run-summary", "run-timings", "run-progress", "fleet"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name


# -- helpers ---------------------------------------------------------------------------------


def _aws(stack: Stack, service: str) -> Any:
    return stack_client(stack.env, service)


def _failure_records(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket="img2img-results", Prefix="failed/")
    return [o["Key"] for o in listed.get("Contents", []) if "half.png" in o["Key"]]


def _latest_artifact(
    stack: Stack, key: str, run: str | None = None, failed: bool = False
) -> dict[str, Any]:
    import httpx

    body: dict[str, Any] = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"}
    if run is not None:
        body["artifacts"]["flow_run_id"] = {"any_": [run]}
    found = httpx.post(f"{stack.api}/artifacts/filter", json=body, timeout=30).json()
    if failed:
        found = [a for a in found if "FAILED" in str(a.get("description"))]
    assert found, f"no {key} artifact" + (f" for run {run}" if run else "")
    return dict(found[0])


def _images_of(stack: Stack, run: str) -> int:
    """The uploads flow run `run` was given (its `objects` parameter)."""
    import httpx

    found = httpx.get(f"{stack.api}/flow_runs/{run}", timeout=30).json()
    return len(found["parameters"]["objects"])


def _until(check: Any, what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = check()
        except Exception:  # the service is still coming up
            got = None
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"{what}: not seen within {timeout_s:.0f} s")

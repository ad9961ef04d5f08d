"""Lanes on the local stack (real processes: moto, the Prefect server, the dispatcher, the
autoscaler, a warm worker on the simulated device): a burst of bulk uploads is running and
more of it waits when an interactive upload arrives; the interactive one takes the place
kept for its lane and the device's next call, and comes back while most of the burst is
still to do. An upload that names a lane that does not exist ends as a failure record
that names the lanes, and a tenant's upload over its quota one that names the quota. Each
lane is a work queue of its own with its priority."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from img2img.intake.events import ObjectRef
from infra.local.audit import audit
from infra.local.resources import APP_QUEUE
from tests.conftest import free_port
from tests.integration.helpers import FAST, drain, img2img, png, stack_client, stack_env
from tests.integration.warm import wait_for

pytestmark = pytest.mark.slow

BULK = 36
BUCKET = "img2img-uploads"


def _runs(api: str, queue: str, states: list[str]) -> int:
    body = {
        "flow_runs": {"state": {"type": {"any_": states}}},
        "work_queues": {"name": {"any_": [queue]}},
    }
    got = httpx.post(f"{api}/flow_runs/count", json=body, timeout=30)
    got.raise_for_status()
    return int(got.json())


def _lanes_seen(url: str) -> Any:
    """The scrape once the fleet view shows both lanes and tenant acme with every bulk image
    (None before)."""
    from img2img.observe.scrape import parse

    try:
        scraped = parse(httpx.get(url, timeout=5).text)
    except httpx.HTTPError:
        return None
    bulk = scraped.lanes.get("bulk", {})
    if "interactive" in scraped.lanes and "acme" in scraped.tenants and bulk.get("cost_usd"):
        return scraped
    return None


def _upload(s3: Any, key: str, metadata: dict[str, str]) -> ObjectRef:
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=png(), Metadata={**FAST, **metadata})
    return ObjectRef(bucket=BUCKET, key=key, etag=put["ETag"].strip('"'))


def test_an_interactive_upload_overtakes_a_waiting_bulk_burst(tmp_path: Path) -> None:
    metrics_port = free_port()
    env = stack_env(
        tmp_path / "state",
        {
            "IMG2IMG_LOCAL__METRICS_PORT": str(metrics_port),
            "IMG2IMG_MONITOR__FLEET_INTERVAL_S": "5",
            "IMG2IMG_LANES__ENABLED": "true",
            "IMG2IMG_TENANTS__ENABLED": "true",
            # Tenant "trial" may upload 2 images an hour; a third ends as a failure record.
            "IMG2IMG_TENANTS__QUOTA_PER_HOUR": '{"trial": 2}',
            "IMG2IMG_TENANTS__OVER_QUOTA": "fail",
            # One host of one slot holding 3 runs, one place kept for interactive work.
            "IMG2IMG_SCALING__MAX_HOSTS": "1",
            "IMG2IMG_WORKER__RUNS_PER_SLOT": "3",
            "IMG2IMG_SCALING__IDLE_TO_ZERO_S": "600",
            "IMG2IMG_SCALING__INTERVAL_S": "1",
            # 0.8 s of device an image, one image a call: the burst is 29 s of work, in runs
            # of 12 (each stage of a bulk run holds the device 4.8 s unless it yields).
            "IMG2IMG_STAGES__BACKEND": "simulated",
            "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "400",
            "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "400",
            "IMG2IMG_DISPATCH__ADAPTIVE": "false",
            "IMG2IMG_DISPATCH__BASE_BATCH": "12",
            "IMG2IMG_DISPATCH__MAX_WAIT_S": "1",
            "IMG2IMG_STAGES__SIMULATED__LOAD_S": "0.2",
            "IMG2IMG_STAGES__DEVICE_BATCH": "1",
        },
    )
    api = f"http://127.0.0.1:{env['IMG2IMG_LOCAL__PREFECT_PORT']}/api"
    try:
        up = img2img(["local", "up"], env, 400)
        assert up.returncode == 0, up.stderr[-4000:]
        s3, sqs = stack_client(env, "s3"), stack_client(env, "sqs")
        app = sqs.get_queue_url(QueueName=APP_QUEUE)["QueueUrl"]
        # A first upload brings the host up (the pool starts at zero).
        warm = _upload(s3, "shop/warm.png", {})
        first = drain(sqs, app, quiet_s=1, limit_s=240, at_least=1)
        assert [m["upload"]["key"] for m in first] == [warm.key], first

        queues = httpx.post(f"{api}/work_pools/inf2/queues/filter", json={}, timeout=30).json()
        priorities = {q["name"]: q["priority"] for q in queues}
        assert priorities["interactive"] == 1 and priorities["bulk"] == 10, priorities

        # Tenant trial's three (before the burst, so they never share the device with the
        # interactive upload measured below).
        trial = [_upload(s3, f"trial/{i}.png", {}) for i in range(3)]
        bulk = [
            _upload(s3, f"catalogue/item {i:02d}.png", {"lane": "bulk", "tenant": "acme"})
            for i in range(BULK)
        ]
        # The burst is on the device and more of it waits for a place.
        wait_for(lambda: _runs(api, "bulk", ["RUNNING"]) >= 1, 120, "a bulk run to start")
        wait_for(
            lambda: _runs(api, "bulk", ["SCHEDULED", "PENDING"]) >= 1,
            60,
            "a bulk run to wait for a place",
            interval=0.1,
        )
        asked = time.time()
        urgent = _upload(s3, "shop/edit.png", {})  # no lane named: the default, interactive
        wrong = _upload(s3, "shop/typo.png", {"lane": "urgent"})
        messages = drain(sqs, app, quiet_s=3, limit_s=300, at_least=BULK + 5)
        report = audit(s3, "img2img-results", [*bulk, urgent, wrong, *trial], messages=messages)
        # The operator's view: each lane and tenant with its images and attributed cost.
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        scraped = wait_for(lambda: _lanes_seen(url), 60, "lanes and tenants in /metrics")
        top = img2img(["top", "--once", "--url", url], env, 60)
    finally:
        down = img2img(["local", "down"], env, 180)
    # Nothing left running: the autoscaler (which still wants its host) is stopped before
    # the workers, so it cannot start one again while they drain.
    status = json.loads(img2img(["local", "status"], env, 60).stdout)
    assert down.returncode == 0 and not any(s["running"] for s in status.values()), status

    by_key = {m["upload"]["key"]: m for m in messages}
    assert len(messages) == len(by_key) == BULK + 5, sorted(by_key)
    assert report.problems == (), report.problems

    edit = by_key[urgent.key]
    assert edit["outcome"] == "result", edit
    assert (edit["lane"], edit["tenant"]) == ("interactive", "shop")
    assert {(by_key[r.key]["lane"], by_key[r.key]["tenant"]) for r in bulk} == {("bulk", "acme")}
    # It came back while most of the burst was still to do: it did not wait for the burst.
    done = datetime.fromisoformat(edit["finished_at"]).timestamp()
    later = [
        r for r in bulk if datetime.fromisoformat(by_key[r.key]["finished_at"]).timestamp() > done
    ]
    waits = edit["timings_ms"]
    print("interactive", round(done - asked, 2), "s;", len(later), "bulk later;", waits)
    assert len(later) >= BULK // 3, (len(later), done - asked, waits)
    # On the device it waited for a bulk call per stage at most (0.4 s each), not for the
    # rest of a bulk run's stage (up to 4.8 s): the bulk run yielded between two calls.
    assert waits["device_wait"] < 2000, waits

    # /metrics and `img2img top` by lane and tenant; the window's host cost is attributed by
    # device time (bulk did the most).
    assert set(scraped.lanes) == {"interactive", "bulk"}, scraped.lanes
    assert {"acme", "shop", "trial"} <= set(scraped.tenants), scraped.tenants
    bulk_cost = scraped.lanes["bulk"]["cost_usd"]
    assert bulk_cost > scraped.lanes["interactive"]["cost_usd"] > 0, scraped.lanes
    assert scraped.tenants["acme"]["device_seconds"] > scraped.tenants["shop"]["device_seconds"]
    assert top.returncode == 0 and "lanes (fleet window)" in top.stdout, top.stdout
    assert "busiest tenants" in top.stdout and "acme" in top.stdout, top.stdout

    typo = by_key[wrong.key]
    assert typo["outcome"] == "failure" and typo["failure"]["stage"] == "placement", typo
    assert "not one of the lanes: interactive, bulk" in typo["failure"]["reason"]
    assert typo["failure"]["retryable"] is False

    # Over its quota: the third of tenant trial's uploads ends as a failure that says so.
    outcomes = sorted(by_key[r.key]["outcome"] for r in trial)
    assert outcomes == ["failure", "result", "result"], outcomes
    over = next(by_key[r.key] for r in trial if by_key[r.key]["outcome"] == "failure")
    assert over["failure"]["reason"] == "tenant 'trial' is over its quota of 2 images an hour"
    assert over["tenant"] == "trial" and over["failure"]["stage"] == "placement"

"""Scale targets and the autoscaler against moto (Auto Scaling, ECS, CloudWatch) and a
real Prefect API."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest

from deployments.services.scale_targets import AsgTarget, CloudWatchMetrics, EcsTarget
from img2img.aws.clients import service_client
from img2img.config.scaling import ScalingSettings
from img2img.scaling.policy import Decision, Observation
from tests.conftest import AwsEnv


@pytest.fixture
def asg(aws: AwsEnv) -> Any:
    _, settings = aws
    ec2 = service_client(settings.aws, "ec2")
    autoscaling = service_client(settings.aws, "autoscaling")
    ec2.create_launch_template(
        LaunchTemplateName="inf2",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "inf2.xlarge"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="img2img-inf2",
        MinSize=0,
        MaxSize=6,
        DesiredCapacity=3,
        LaunchTemplate={"LaunchTemplateName": "inf2", "Version": "$Latest"},
        AvailabilityZones=["us-east-1a"],
    )
    return autoscaling


def protection(autoscaling: Any) -> dict[str, bool]:
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["img2img-inf2"])[
        "AutoScalingGroups"
    ][0]
    return {i["InstanceId"]: i["ProtectedFromScaleIn"] for i in group["Instances"]}


def test_asg_target_sets_capacity_and_protects_busy_hosts(asg: Any) -> None:
    backend = AsgTarget(asg, "img2img-inf2")
    assert backend.current() == 3
    busy_host = sorted(protection(asg))[0]

    message = backend.apply(1, busy={busy_host})

    assert "1 busy hosts protected" in message
    assert backend.current() == 1
    flags = protection(asg)
    assert flags.get(busy_host) is True  # the host running a flow run is not scaled in
    assert not any(v for k, v in flags.items() if k != busy_host)


def test_asg_target_replaces_an_unhealthy_host_by_marking_it_unhealthy(asg: Any) -> None:
    backend = AsgTarget(asg, "img2img-inf2")
    sick = sorted(protection(asg))[0]
    message = backend.replace(sick, "no slot left")
    assert sick in message and "Unhealthy" in message
    health = {
        i["InstanceId"]: i["HealthStatus"]
        for i in asg.describe_auto_scaling_instances()["AutoScalingInstances"]
    }
    assert health[sick].upper() == "UNHEALTHY"
    assert [h for i, h in health.items() if i != sick and h.upper() != "HEALTHY"] == []


def test_asg_target_names_a_missing_group(aws: AwsEnv) -> None:
    _, settings = aws
    backend = AsgTarget(service_client(settings.aws, "autoscaling"), "nope")
    with pytest.raises(LookupError, match="'nope' does not exist"):
        backend.current()


@pytest.fixture
def ecs(aws: AwsEnv) -> Any:
    _, settings = aws
    client = service_client(settings.aws, "ecs")
    client.create_cluster(clusterName="img2img")
    client.register_task_definition(
        family="worker",
        containerDefinitions=[{"name": "worker", "image": "img2img:latest", "memory": 512}],
    )
    client.create_service(
        cluster="img2img", serviceName="workers", taskDefinition="worker", desiredCount=1
    )
    return client


def test_ecs_target_sets_the_desired_count(ecs: Any) -> None:
    backend = EcsTarget(ecs, "img2img", "workers")
    assert backend.current() == 1
    backend.apply(4, busy=set())
    assert backend.current() == 4


def test_ecs_target_replaces_an_unhealthy_host_by_stopping_its_task(ecs: Any) -> None:
    task = ecs.run_task(cluster="img2img", taskDefinition="worker", count=1, launchType="FARGATE")[
        "tasks"
    ][0]
    task_id = task["taskArn"].rsplit("/", 1)[-1]
    message = EcsTarget(ecs, "img2img", "workers").replace(task_id, "no slot left")
    assert task_id in message
    stopped = ecs.describe_tasks(cluster="img2img", tasks=[task["taskArn"]])["tasks"][0]
    assert stopped["desiredStatus"] == "STOPPED" and "no slot left" in stopped["stoppedReason"]


def test_cloudwatch_metrics_are_published(aws: AwsEnv) -> None:
    _, settings = aws
    cloudwatch = service_client(settings.aws, "cloudwatch")
    metrics = CloudWatchMetrics(cloudwatch, "img2img-test", "inf2")
    obs = Observation(now=0, queued=6, running=2, current_desired=2)
    metrics.publish(obs, Decision(desired=3, reason="scale out", usage=4.0, needed=3, demand=8))
    listed = cloudwatch.list_metrics(Namespace="img2img-test")["Metrics"]
    names = {m["MetricName"] for m in listed}
    assert {"QueuedRuns", "RunningRuns", "DesiredHosts", "UsageRate", "BacklogPerHost"} <= names
    assert all(m["Dimensions"] == [{"Name": "WorkPool", "Value": "inf2"}] for m in listed)


@pytest.mark.usefixtures("prefect_api")
def test_autoscaler_reads_the_pool_queue_and_scales_the_service(ecs: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from deployments.services.autoscaler import ARTIFACT_KEY, Autoscaler
    from tests.integration.warm import create_pool_and_deployment

    ecs.update_service(cluster="img2img", service="workers", desiredCount=0)
    with get_client(sync_client=True) as client:
        pool, deployment_id = create_pool_and_deployment(client, pool_type="process")
        for _ in range(3):
            client.create_flow_run_from_deployment(deployment_id, parameters={"objects": []})
        policy = ScalingSettings(
            max_hosts=5, slots_per_host=1, expected_run_s=60, drain_target_s=60
        )
        scaler = Autoscaler(client, pool, policy, EcsTarget(ecs, "img2img", "workers"))

        obs = scaler.observe()
        assert (obs.queued, obs.running, obs.current_desired) == (3, 0, 0)
        assert obs.arrival_rate == pytest.approx(3 / 60)
        decision = scaler.step()

        assert decision.desired >= 1 and decision.reason.startswith("activate from zero")
        assert EcsTarget(ecs, "img2img", "workers").current() == decision.desired
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
        )
        assert artifacts and "activate from zero" in str(artifacts[0].data)
        # The same state again is a hold: no flapping, no new record.
        again = scaler.step()
        assert again.desired == decision.desired and again.reason.startswith("hold")


@pytest.mark.usefixtures("prefect_api")
def test_with_lanes_the_autoscaler_counts_bulk_apart_and_holds_it_to_its_cap(ecs: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from deployments.services.autoscaler import Autoscaler
    from deployments.services.lane_queues import ensure_lane_queues
    from img2img.config.lanes import LaneSettings
    from tests.integration.warm import create_pool_and_deployment

    ecs.update_service(cluster="img2img", service="workers", desiredCount=0)
    target = EcsTarget(ecs, "img2img", "workers")
    with get_client(sync_client=True) as client:
        pool, deployment_id = create_pool_and_deployment(client, pool_type="process")
        ensure_lane_queues(client, [pool], LaneSettings(enabled=True))
        bulk = [
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"objects": []}, work_queue_name="bulk"
            )
            for _ in range(12)
        ]
        client.set_flow_run_state(bulk[0].id, Running(), force=True)  # one on a host
        client.create_flow_run_from_deployment(
            deployment_id, parameters={"objects": []}, work_queue_name="interactive"
        )
        policy = ScalingSettings(
            max_hosts=10,
            slots_per_host=1,
            expected_run_s=60,
            drain_target_s=60,
            lower_lanes_max_hosts=2,
        )
        one_line = Autoscaler(client, pool, policy, target)
        laned = Autoscaler(client, pool, policy, target, lower_lanes=("bulk",))

        seen = laned.observe()
        assert (seen.queued, seen.running) == (12, 1) and seen.lower is not None
        assert (seen.lower.queued, seen.lower.running) == (11, 1)
        assert seen.lower.arrival_rate == pytest.approx(12 / 60)
        assert one_line.observe().lower is None
        # One line sizes for all 13 runs; with lanes bulk is held to 2 hosts (the
        # one interactive run fits within them).
        assert one_line.step().desired == 10
        target.apply(0, set())
        assert laned.step().desired == 2
        assert target.current() == 2


def test_warm_pool_instances_are_counted_when_ready_to_resume(asg: Any) -> None:
    from deployments.services.scale_targets import waiting_in_warm_pool

    backend = AsgTarget(asg, "img2img-inf2")
    assert backend.warm() == 0  # a group with no warm pool: none waiting, no error
    # What the count is read from (moto prepares no warm-pool instances, so the count of
    # each lifecycle state is checked on the instances' answer itself):
    states = ["Warmed:Stopped", "Warmed:Pending", "Warmed:Pending:Wait", "Warmed:Stopped"]
    assert waiting_in_warm_pool([{"LifecycleState": s} for s in states]) == 2


@pytest.mark.usefixtures("prefect_api")
def test_the_autoscaler_forecasts_from_the_pools_runs_on_past_days(ecs: Any) -> None:
    """Runs scheduled at this time on three past days, just ahead of now: the autoscaler
    reads them from Prefect's run history, trusts the forecast (today so far agrees: no
    arrivals yet) and starts hosts ahead of the rise, with nothing queued."""
    from datetime import datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Scheduled

    from deployments.services.autoscaler import Autoscaler
    from img2img.config.scaling import ForecastSettings
    from tests.integration.warm import create_pool_and_deployment

    ecs.update_service(cluster="img2img", service="workers", desiredCount=0)
    with get_client(sync_client=True) as client:
        pool, deployment_id = create_pool_and_deployment(client, pool_type="process")
        now = datetime.now(UTC)
        for day in (1, 2, 3):
            for i in range(8):  # 8 runs from 30 s to 37 s ahead, a day earlier
                at = now - timedelta(days=day) + timedelta(seconds=30 + i)
                run = client.create_flow_run_from_deployment(
                    deployment_id, parameters={"objects": []}, state=Scheduled(scheduled_time=at)
                )
                client.set_flow_run_state(run.id, Completed(), force=True)  # served then
        policy = ScalingSettings(
            max_hosts=20,
            slots_per_host=1,
            expected_run_s=10,
            host_start_s=60,
            forecast=ForecastSettings(enabled=True, days=7, min_days=3, lead_s=90),
        )
        scaler = Autoscaler(client, pool, policy, EcsTarget(ecs, "img2img", "workers"))

        obs = scaler.observe()
        assert obs.queued == 0 and obs.recent_arrival_rate == 0 and obs.warm == 0
        assert obs.forecast is not None and obs.forecast.days == 3
        assert obs.forecast.trusted and obs.forecast.rising
        assert 4 <= obs.forecast.rate_ahead * 15 <= 8  # the busiest 15-s bucket ahead
        decision = scaler.step()
        assert decision.reason.startswith("pre-scale: forecast") and decision.desired >= 2
        assert EcsTarget(ecs, "img2img", "workers").current() == decision.desired


@pytest.mark.usefixtures("prefect_api")
def test_the_scaling_bench_publishes_its_table_and_charts_as_an_artifact() -> None:
    from prefect.client.orchestration import get_client

    from img2img.config.scaling import ScalingSettings as Policy
    from infra.bench.scaling_charts import ARTIFACT_KEY, bench_markdown, publish, trace_png
    from infra.bench.scaling_compare import Bench, compare
    from infra.bench.scaling_sim import HostStart, Trace

    trace = Trace("blip", 600, lambda t: 2.0 if t < 120 else 0.0, "a short blip")
    bench = Bench(service_s=4.0, starts=HostStart(), slots_per_host=4, price_per_hour=1.0)
    bench = Bench(**{**bench.__dict__, "sample_s": 30.0})
    charted: dict = {}
    rows = compare(
        trace, ["img2img", "keda"], Policy(max_hosts=10), bench, on_result=charted.__setitem__
    )
    png = trace_png(trace, charted, dpi=40)
    markdown = bench_markdown(rows, {"blip": png}, "test bench")
    assert "| img2img | default |" in markdown and "| keda | default |" in markdown
    assert "![blip](data:image/png;base64," in markdown and png[:8] == b"\x89PNG\r\n\x1a\n"
    with get_client(sync_client=True) as client:
        publish(client, markdown, "Scaling bench")
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
        )
    assert found and found[0].type == "markdown" and "## blip" in str(found[0].data)


@pytest.mark.usefixtures("prefect_api")
def test_at_zero_the_autoscaler_decides_again_as_soon_as_a_run_is_queued(ecs: Any) -> None:
    import threading

    from prefect.client.orchestration import get_client

    from deployments.services.autoscaler import Autoscaler
    from tests.integration.warm import create_pool_and_deployment

    with get_client(sync_client=True) as client:
        pool, deployment_id = create_pool_and_deployment(client, pool_type="process")
        # An interval no test outlasts: a wake can only come from the queued run.
        policy = ScalingSettings(interval_s=3600, zero_interval_s=0.5)
        scaler = Autoscaler(client, pool, policy, EcsTarget(ecs, "img2img", "workers"))
        woke = threading.Event()

        def wait() -> None:
            scaler.wait_next(at_zero=True)
            woke.set()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        assert not woke.wait(2.0)  # nothing queued: it keeps waiting
        client.create_flow_run_from_deployment(deployment_id, parameters={"objects": []})
        assert woke.wait(60.0), "still waiting for the hour's interval with a run queued"
        scaler.stop()


@pytest.mark.usefixtures("prefect_api")
def test_the_upscale_pool_starts_its_hosts_while_generate_holds_the_work(ecs: Any) -> None:
    """Split topology: runs queued on the stage-1 pool only. The stage-1 autoscaler asks
    for hosts; the stage-2 autoscaler, whose own queue is empty, sees that work on its way
    (its upstream) and starts hosts too, each pool through its own ECS service."""
    from prefect.client.orchestration import get_client

    from deployments.services.autoscaler import Autoscaler
    from deployments.services.autoscalers import PoolScalers
    from tests.integration.warm import create_pool_and_deployment

    ecs.create_service(
        cluster="img2img", serviceName="upscale", taskDefinition="worker", desiredCount=0
    )
    ecs.update_service(cluster="img2img", service="workers", desiredCount=0)
    with get_client(sync_client=True) as client:
        first_pool, deployment_id = create_pool_and_deployment(client, pool_type="process")
        second_pool, _ = create_pool_and_deployment(client, pool_type="process")
        for _ in range(4):
            client.create_flow_run_from_deployment(deployment_id, parameters={"objects": []})
        policy = ScalingSettings(
            max_hosts=5, slots_per_host=1, expected_run_s=60, drain_target_s=60
        )
        first = Autoscaler(client, first_pool, policy, EcsTarget(ecs, "img2img", "workers"))
        second = Autoscaler(client, second_pool, policy, EcsTarget(ecs, "img2img", "upscale"))
        alone = second.step()  # before it knows of stage 1: nothing to do
        assert alone.desired == 0 and alone.reason.startswith("hold at zero")
        second.upstream = first
        scalers = PoolScalers([first, second])
        one, two = scalers.step()
        assert one.desired >= 1 and one.reason.startswith("activate from zero")
        assert second.last is not None and second.last.upstream == 4
        assert two.desired >= 1 and two.reason.startswith("activate from zero"), two.reason
        assert EcsTarget(ecs, "img2img", "upscale").current() == two.desired


class _EcsTaskProtection:
    """The four ECS calls the backend makes, over ECS's own JSON protocol on loopback: moto
    has no task protection (UpdateTaskProtection), so this stands in for it alone, and the
    real boto3 client, its request shapes and batching are what is tested."""

    def __init__(self, tasks: list[str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.tasks = tasks
        self.desired = len(tasks)
        self.protected: dict[str, int | None] = {}  # task arn → minutes (None: released)
        self.calls: list[int] = []  # tasks per UpdateTaskProtection call
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                return None

            def do_POST(self) -> None:
                import json

                action = self.headers["X-Amz-Target"].rsplit(".", 1)[-1]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                answer = fake.answer(action, body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        if action == "ListTasks":
            assert body["desiredStatus"] == "RUNNING" and body["serviceName"] == "workers"
            return {"taskArns": self.tasks}
        if action == "UpdateTaskProtection":
            self.calls.append(len(body["tasks"]))
            for arn in body["tasks"]:
                on = body["protectionEnabled"]
                self.protected[arn] = body.get("expiresInMinutes") if on else None
            return {"protectedTasks": [], "failures": []}
        if action == "UpdateService":
            self.desired = body["desiredCount"]
            return {"service": {"serviceName": "workers", "desiredCount": self.desired}}
        raise AssertionError(f"unexpected ECS call {action}")


def test_ecs_target_protects_busy_tasks_from_scale_in_and_releases_idle_ones() -> None:
    """23 tasks, 12 of them running flow runs (their workers are named by task id): the
    busy ones are protected for `protect_minutes`, the idle ones released, ten tasks per
    call (the API's limit), before the desired count is lowered."""
    import boto3

    arns = [f"arn:aws:ecs:us-east-1:123456789012:task/img2img/t{i:02d}" for i in range(23)]
    busy = {f"t{i:02d}" for i in range(0, 23, 2)}
    fake = _EcsTaskProtection(arns)
    try:
        ecs = boto3.client(
            "ecs",
            endpoint_url=fake.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        message = EcsTarget(ecs, "img2img", "workers").apply(12, busy)
    finally:
        fake.server.shutdown()

    assert fake.desired == 12 and "12 busy tasks protected" in message
    on = {arn.rsplit("/", 1)[-1] for arn, minutes in fake.protected.items() if minutes}
    off = {arn.rsplit("/", 1)[-1] for arn, minutes in fake.protected.items() if minutes is None}
    assert on == busy and off == {f"t{i:02d}" for i in range(1, 23, 2)}
    assert set(fake.protected.values()) == {EcsTarget.protect_minutes, None}
    assert sorted(fake.calls) == [1, 2, 10, 10]  # 12 busy: 10 + 2; 11 idle: 10 + 1


@pytest.mark.usefixtures("prefect_api")
def test_unhealthy_reports_replace_at_most_the_hourly_cap_of_hosts() -> None:
    """A report of an unhealthy worker is an event any holder of the API credential can
    send: a burst of them (forged, say, by one compromised host about its peers) replaces
    at most `max_replaced_per_hour` hosts; the rest wait for the hour to pass."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from deployments.services.autoscaler import HELD_EVENT, Autoscaler
    from tests.integration.warm import RecordingGroup, create_pool_and_deployment, wait_for

    now = [1000.0]
    with get_client(sync_client=True) as client:
        pool, _ = create_pool_and_deployment(client, pool_type="process")
        group = RecordingGroup()
        policy = ScalingSettings(max_replaced_per_hour=2)
        scaler = Autoscaler(client, pool, policy, group, clock=lambda: now[0])
        for i in range(5):
            scaler.unhealthy[f"host-{i}@w{i}"] = "no slot left"
        assert len(scaler.replace_unhealthy()) == 2
        assert len(scaler.replace_unhealthy()) == 0  # held, not dropped
        now[0] += 1800
        assert scaler.replace_unhealthy() == []
        now[0] += 1801  # the first two are an hour old
        assert len(scaler.replace_unhealthy()) == 2
        now[0] += 3601
        assert len(scaler.replace_unhealthy()) == 1
        assert [h for h, _ in group.replaced] == [f"host-{i}" for i in range(5)]

        def held() -> list[Any]:
            events = client.read_events(
                EventFilter(event=EventNameFilter(name=[HELD_EVENT])), limit=50
            )
            return [
                e for e in events.events if str(e.payload.get("worker", "")).startswith("host-")
            ]

        # Each held host is announced once, however many looks it waited.
        got = wait_for(lambda: len(held()) >= 3 and held(), 30, "the held events")
        assert sorted(e.payload["worker"] for e in got) == [f"host-{i}@w{i}" for i in (2, 3, 4)]

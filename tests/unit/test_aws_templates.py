"""Static checks of the CloudFormation templates: what moto cannot show when it deploys them
(public access blocks, TLS-only policies, least privilege), read from the templates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.test_aws_templates import load_template


@pytest.fixture(scope="module")
def storage() -> dict[str, Any]:
    return load_template("storage.yaml")["Resources"]


@pytest.fixture(scope="module")
def compute() -> dict[str, Any]:
    return load_template("compute.yaml")["Resources"]


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def test_every_bucket_is_private_encrypted_and_tls_only(storage: dict[str, Any]) -> None:
    buckets = of_type(storage, "AWS::S3::Bucket")
    policies = of_type(storage, "AWS::S3::BucketPolicy")
    assert set(buckets) == {"AccessLogBucket", "UploadsBucket", "ResultsBucket", "ModelsBucket"}
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values()), name
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
        assert props["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced"
        assert props["VersioningConfiguration"]["Status"] == "Enabled", name
        policy = next(p for p in policies.values() if p["Properties"]["Bucket"] == {"Ref": name})
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
            for s in statements
        ), name


def test_directory_bucket_is_in_the_chosen_az_and_expires_stage_outputs(
    storage: dict[str, Any],
) -> None:
    stage = storage["StageBucket"]["Properties"]
    assert stage["LocationName"] == {"Ref": "AvailabilityZoneId"}
    assert "--x-s3" in json.dumps(stage["BucketName"])
    rules = stage["LifecycleConfiguration"]["Rules"]
    assert any(r.get("ExpirationInDays") == {"Ref": "StageOutputExpiryDays"} for r in rules)


def test_queues_are_encrypted_and_only_the_uploads_bucket_may_send(
    storage: dict[str, Any],
) -> None:
    for queue in of_type(storage, "AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    allows = [
        s
        for policy in of_type(storage, "AWS::SQS::QueuePolicy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    (allow,) = allows  # the ingest queue's, and no other queue lets anyone send
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert "aws:SourceArn" in allow["Condition"]["ArnEquals"]


def test_alarms_watch_the_dead_letter_queue_and_message_age(storage: dict[str, Any]) -> None:
    metrics = {
        a["Properties"]["MetricName"] for a in of_type(storage, "AWS::CloudWatch::Alarm").values()
    }
    assert metrics == {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"}


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """A role's policy statements, a conditional one (`Fn::If`) taken as if its condition
    held (the stricter reading: every statement the role may get)."""
    out = []
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                _, when, otherwise = statement["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}, statement
                statement = when
            out.append(statement)
    return out


def test_roles_are_least_privilege(compute: dict[str, Any]) -> None:
    for name, role in of_type(compute, "AWS::IAM::Role").items():
        for policy in [{"PolicyDocument": {"Statement": statements(role)}}]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = actions if isinstance(actions, list) else [actions]
                assert not any(a == "*" or a.endswith(":*") for a in actions), (name, actions)
                if statement["Resource"] == "*":
                    # Only calls that cannot be scoped to a resource, or a condition scopes.
                    assert (
                        all(a.startswith("autoscaling:Describe") for a in actions)
                        or "Condition" in statement
                    ), (name, statement["Sid"])
    worker = json.dumps(compute["WorkerRole"])
    assert "s3express:CreateSession" in worker and "s3:DeleteObject" not in worker
    # The autoscaler may replace an unhealthy host of its own group, and only there.
    scale = next(
        st
        for role in of_type(compute, "AWS::IAM::Role").values()
        for st in statements(role)
        if st.get("Sid") == "ScaleTheInferenceGroup"
    )
    assert "autoscaling:SetInstanceHealth" in scale["Action"]
    assert "autoScalingGroupName/${Prefix}-inf2" in json.dumps(scale["Resource"])


def test_hosts_use_imdsv2_encrypted_disks_and_drain_on_scale_in(
    compute: dict[str, Any],
) -> None:
    for template in of_type(compute, "AWS::EC2::LaunchTemplate").values():
        data = template["Properties"]["LaunchTemplateData"]
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert all(m["Ebs"]["Encrypted"] for m in data["BlockDeviceMappings"])
        user_data = json.dumps(data["UserData"])
        assert "secretsmanager get-secret-value" in user_data  # the key never in plain text
    group = compute["InferenceGroup"]["Properties"]
    hooks = {h["LifecycleHookName"]: h for h in group["LifecycleHookSpecificationList"]}
    assert hooks["drain"]["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hooks["ready"]["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert group["VPCZoneIdentifier"] == [{"Ref": "InferenceSubnetId"}]
    inference = json.dumps(compute["InferenceLaunchTemplate"])
    assert "--type img2img-warm" in inference and "--name $IID" in inference
    # Inf2 hosts serve compiled artifacts, and the autoscaler counts their slots.
    assert "IMG2IMG_STAGES__BACKEND=neuron" in inference
    assert "IMG2IMG_STAGES__GENERATE_ARTIFACTS=${Img2ImgArtifactsUri}" in inference
    assert "IMG2IMG_WORKER__CORE_GROUPS=$CORES" in inference and "${SlotCoreGroups}" in inference
    # Split topology: the host's group says its pool, its slots and the model it loads.
    assert "--pool $POOL" in inference and "IMG2IMG_WORKER__STAGES=$STAGES" in inference
    assert "${Prefix}-upscale" in inference and "${UpscaleSlotCoreGroups}" in inference
    upscale = compute["UpscaleGroup"]
    assert upscale["Condition"] == "Split"
    policy = upscale["Properties"]["MixedInstancesPolicy"]
    assert policy["LaunchTemplate"]["Overrides"] == [
        {"InstanceType": {"Ref": "UpscaleInstanceType"}}
    ]
    control = json.dumps(compute["ControlLaunchTemplate"])
    assert "IMG2IMG_AUTOSCALER__POOL_GROUPS=$POOL_GROUPS" in control
    assert "IMG2IMG_TOPOLOGY=${Topology}" in control
    assert "IMG2IMG_SCALING__SLOTS_PER_HOST=$SLOTS" in control and "${SlotCoreGroups}" in control


def test_gpu_hosts_run_the_eager_backend_in_fp16_one_slot_per_gpu(
    compute: dict[str, Any],
) -> None:
    template = load_template("compute.yaml")
    data = compute["InferenceLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["ImageId"] == {
        "Fn::If": ["OnGpu", {"Ref": "GpuAmiParameter"}, {"Ref": "NeuronAmiParameter"}]
    }
    _, variables = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    gpu, neuron = variables["StageEnv"]["Fn::If"][1:]
    assert "IMG2IMG_STAGES__BACKEND=eager" in gpu["Fn::Sub"]
    assert "IMG2IMG_STAGES__DTYPE=float16" in gpu["Fn::Sub"]
    assert "IMG2IMG_WORKER__DEVICES=$DEVICES" in gpu["Fn::Sub"]
    assert "IMG2IMG_STAGES__BACKEND=neuron" in neuron["Fn::Sub"]
    assert "nvidia-smi -L" in json.dumps(data["UserData"])
    # A GPU type with Accelerator cuda, an inf2 type with neuron: the stack refuses a mix.
    rules = template["Rules"]
    gpu_types = rules["AcceleratorFitsTheInstance"]["Assertions"][0]["Assert"]["Fn::Contains"][0]
    assert all(t.startswith("g") for t in gpu_types)
    allowed = template["Parameters"]["InstanceType"]["AllowedValues"]
    assert set(gpu_types) <= set(allowed)
    # Each GPU type has a price for cost per image.
    from img2img.config.prices import ON_DEMAND_USD_PER_HOUR

    assert all(t in ON_DEMAND_USD_PER_HOUR for t in allowed)


def test_warm_pool_instances_fetch_their_artifacts_and_never_serve_from_the_pool(
    compute: dict[str, Any],
) -> None:
    pool = compute["InferenceWarmPool"]
    assert pool["Condition"] == "WithWarmPool"
    assert pool["Properties"]["PoolState"] == "Stopped"
    assert pool["Properties"]["InstanceReusePolicy"] == {"ReuseOnScaleIn": True}
    assert pool["Properties"]["MinSize"] == {"Ref": "WarmPoolSize"}
    boot = json.dumps(compute["InferenceLaunchTemplate"])
    # Every boot fetches (a no-op when on disk), completes the launch hook and starts the
    # worker only when the instance is in service, never while it waits in the pool.
    assert "img2img prefetch" in boot and "--lifecycle-hook-name ready" in boot
    assert '[ \\"$STATE\\" = InService ]; then systemctl start img2img-worker' in boot
    assert "enable --now img2img-worker" not in boot


@pytest.fixture(scope="module")
def notify() -> dict[str, Any]:
    return load_template("notify.yaml")["Resources"]


def test_completion_topic_is_encrypted_and_only_the_pipeline_publishes(
    notify: dict[str, Any],
) -> None:
    topic = notify["OutcomeTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "TopicKey"}
    assert notify["TopicKey"]["Properties"]["EnableKeyRotation"] is True
    statements = {
        s["Sid"]: s
        for s in notify["OutcomeTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    }
    roles = json.dumps(statements["PipelinePublishes"]["Principal"])
    assert "WorkerRoleArn" in roles and "ControlRoleArn" in roles
    assert statements["PipelinePublishes"]["Action"] == "sns:Publish"
    deny = statements["NobodyElsePublishes"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert json.dumps(deny["Condition"]["ArnNotEquals"]) == json.dumps(
        {"aws:PrincipalArn": statements["PipelinePublishes"]["Principal"]["AWS"]}
    )
    assert statements["TlsOnly"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_app_queue_gets_raw_messages_from_the_topic_only(notify: dict[str, Any]) -> None:
    subscription = notify["AppSubscription"]["Properties"]
    assert subscription["Protocol"] == "sqs" and subscription["RawMessageDelivery"] is True
    assert notify["AppQueue"]["Properties"]["SqsManagedSseEnabled"] is True
    (statement,) = [
        s
        for s in notify["AppQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": "OutcomeTopic"}}}
    rule = notify["RetryableFailuresRule"]
    assert rule["Condition"] == "WithEventBus"
    assert rule["Properties"]["EventPattern"]["detail"]["failure"]["retryable"] == [True]


def test_hosts_announce_to_the_outcomes_topic_and_tag_what_they_announced(
    compute: dict[str, Any],
) -> None:
    for role in ("WorkerRole", "ControlRole"):
        by_sid = {s["Sid"]: s for s in statements(compute[role])}
        publish = next(s for s in by_sid.values() if s["Action"] == "sns:Publish")
        assert json.dumps(publish["Resource"]).endswith(':${Prefix}-outcomes"}'), role
        tagging = [s for s in by_sid.values() if "s3:PutObjectTagging" in json.dumps(s["Action"])]
        assert len(tagging) == 1, role
        assert "results/*" in json.dumps(tagging[0]) and "failed/*" in json.dumps(tagging[0])
    for template in ("InferenceLaunchTemplate", "ControlLaunchTemplate"):
        user_data = json.dumps(compute[template])
        assert "IMG2IMG_NOTIFY__TOPIC_ARN=${Topic}" in user_data, template
        assert "IMG2IMG_STORAGE__RESULTS_BUCKET=${Results}" in user_data, template


@pytest.fixture(scope="module")
def server() -> dict[str, Any]:
    return load_template("prefect-server.yaml")["Resources"]


def _container(server: dict[str, Any], task: str) -> dict[str, Any]:
    (container,) = server[task]["Properties"]["ContainerDefinitions"]
    return dict(container)


def test_server_runs_api_and_services_apart_on_the_pinned_image(server: dict[str, Any]) -> None:
    api, services = _container(server, "ApiTask"), _container(server, "ServicesTask")
    assert api["Image"] == services["Image"] == {"Ref": "PrefectImage"}
    assert api["Command"][-1].endswith(
        "prefect server start --host 0.0.0.0 --port 4200 --no-services"
    )
    assert services["Command"][-1].endswith("prefect server services start")
    # Only the one services task migrates: the API replicas never race on it.
    assert "database upgrade -y" in services["Command"][-1]
    api_env = {e["Name"]: e["Value"] for e in api["Environment"]}
    assert api_env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
    # Not Prefect's default "*": only the UI's own origin may call the API from a browser.
    assert api_env["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == {"Fn::Sub": "https://${DomainName}"}
    assert server["ServicesService"]["Properties"]["DesiredCount"] == 1
    assert server["ApiService"]["Properties"]["DesiredCount"] == {"Ref": "ApiReplicas"}
    for container in (api, services):
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
        assert env["PREFECT_REDIS_MESSAGING_SSL"] == "true"
        assert env["PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_ENABLED"] == "true"
        # Credentials come from Secrets Manager, never from the environment.
        secrets = {s["Name"] for s in container["Secrets"]}
        assert secrets == {
            "PREFECT_SERVER_DATABASE_USER",
            "PREFECT_SERVER_DATABASE_PASSWORD",
            "PREFECT_SERVER_API_AUTH_STRING",
            "PREFECT_REDIS_MESSAGING_PASSWORD",
            "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_PASSWORD",
        }
        assert not any("PASSWORD" in name or "AUTH" in name for name in env)


def test_the_server_cluster_is_configured_as_the_local_stack_s(server: dict[str, Any]) -> None:
    """`img2img local up --ha` and the template run one shape: the same Prefect modules on
    Redis in every server process (API replicas and services), Redis over TLS with its
    password from the secret, no telemetry, and the API replicas never migrating."""
    from infra.local.cluster import REDIS_MODULES, cluster_env

    local = cluster_env("redis://127.0.0.1:6380")
    for task in ("ApiTask", "ServicesTask"):
        container = _container(server, task)
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        for name, module in REDIS_MODULES.items():
            assert env.get(name) == module, (task, name)
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == local["PREFECT_SERVER_ANALYTICS_ENABLED"]
        # Every Redis the local stack points at a URL for, the template points at the cluster.
        assert env["PREFECT_REDIS_MESSAGING_HOST"] == env["PREFECT_REDIS_WORKER_CLEANUP_QUEUE_HOST"]
        assert env["PREFECT_REDIS_WORKER_CLEANUP_QUEUE_SSL"] == "true"
        assert "PREFECT_SERVER_DOCKET_URL" in local
        assert 'PREFECT_SERVER_DOCKET_URL="rediss://' in container["Command"][-1]
    api = {e["Name"]: e["Value"] for e in _container(server, "ApiTask")["Environment"]}
    assert api["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
    assert local["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"


def test_the_server_image_is_the_prefect_the_project_tests() -> None:
    """The server's image runs the Prefect version the clients (workers, slots, services)
    are tested with: a server older than its clients may refuse what they send."""
    import re
    import tomllib
    from pathlib import Path

    from infra.release.locks import LOCKS, pinned

    # The image is built on the Prefect of the server lock (its build refuses another).
    image = pinned((LOCKS / "server.txt").read_text())["prefect"]
    version = re.fullmatch(r"(\d+\.\d+\.\d+)", image)
    assert version, image
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if re.match(r"prefect[>=<]", d)]
    bounds = dict(re.findall(r"(>=|<)([\d.]+)", pin))

    def release(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))

    tag = release(version.group(1))
    assert release(bounds[">="]) <= tag < release(bounds["<"]), (image, pin)


def test_server_retention_is_on_by_default(server: dict[str, Any]) -> None:
    env = {e["Name"]: e["Value"] for e in _container(server, "ServicesTask")["Environment"]}
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED"] == "events,flow_runs,orphans"
    assert env["PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD"] == {
        "Fn::Sub": "P${RunRetentionDays}D"
    }
    params = load_template("prefect-server.yaml")["Parameters"]
    assert params["RunRetentionDays"]["Default"] == 14


def test_server_data_is_private_and_encrypted(server: dict[str, Any]) -> None:
    db = server["Database"]["Properties"]
    assert db["StorageEncrypted"] is True and db["PubliclyAccessible"] is False
    assert db["MultiAZ"] == {"Fn::If": ["IsMultiAz", True, False]}
    assert db["DeletionProtection"] is True and db["BackupRetentionPeriod"] >= 7
    assert server["DatabaseParameters"]["Properties"]["Parameters"]["rds.force_ssl"] == "1"
    redis = server["Redis"]["Properties"]
    assert redis["AtRestEncryptionEnabled"] is True and redis["TransitEncryptionEnabled"] is True
    for name in ("DatabaseSecret", "AuthSecret", "RedisSecret"):
        assert server[name]["Properties"]["KmsKeyId"] == {"Ref": "Key"}, name
    assert server["LoadBalancer"]["Properties"]["Scheme"] == "internal"
    listener = server["HttpsListener"]["Properties"]
    assert listener["Protocol"] == "HTTPS" and listener["SslPolicy"].startswith(
        "ELBSecurityPolicy-TLS13"
    )
    # The database and Redis take connections from the server tasks only.
    for group in ("DatabaseSecurityGroup", "RedisSecurityGroup"):
        (rule,) = server[group]["Properties"]["SecurityGroupIngress"]
        assert rule["SourceSecurityGroupId"] == {"Ref": "TaskSecurityGroup"}, group
    # The execution role reads these three secrets and nothing else; the tasks call no AWS API.
    statements = server["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    read = next(s for s in statements if s["Sid"] == "ReadItsSecrets")
    assert read["Resource"] == [
        {"Ref": "DatabaseSecret"},
        {"Ref": "AuthSecret"},
        {"Ref": "RedisSecret"},
    ]
    assert "Policies" not in server["TaskRole"]["Properties"]


def test_compute_takes_the_self_hosted_auth_string(compute: dict[str, Any]) -> None:
    params = load_template("compute.yaml")["Parameters"]
    assert params["PrefectCredentialEnv"]["AllowedValues"] == [
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
    ]
    for template in ("InferenceLaunchTemplate", "ControlLaunchTemplate"):
        assert "${PrefectCredentialEnv}=$KEY" in json.dumps(compute[template]), template


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


VIA_SECRETS_MANAGER = {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}


@pytest.mark.parametrize("template", ["compute.yaml", "prefect-server.yaml"])
def test_every_role_that_reads_a_secret_can_decrypt_it_and_nothing_more(template: str) -> None:
    """Reading a secret encrypted with a customer-managed key takes kms:Decrypt on that key
    too (without it the hosts' boot stopped at the secret read). Each role gets exactly
    kms:Decrypt, on the secret's own key, through Secrets Manager only."""
    doc = load_template(template)
    resources, params = doc["Resources"], doc.get("Parameters", {})
    readers = 0
    for name, role in of_type(resources, "AWS::IAM::Role").items():
        st = statements(role)
        kms = [s for s in st if any(a.startswith("kms:") for a in _as_list(s["Action"]))]
        for s in kms:  # nothing more: one action, through Secrets Manager only
            assert _as_list(s["Action"]) == ["kms:Decrypt"], (name, s)
            assert s["Condition"]["StringEquals"]["kms:ViaService"] == VIA_SECRETS_MANAGER
        secrets = [
            ref
            for s in st
            if "secretsmanager:GetSecretValue" in _as_list(s["Action"])
            for ref in _as_list(s["Resource"])
        ]
        for secret in secrets:
            readers += 1
            if secret["Ref"] in resources:  # a secret of this template: its own key
                key = resources[secret["Ref"]]["Properties"]["KmsKeyId"]
                assert key == {"Ref": "Key"}, (name, secret)
                assert any(s["Resource"] == {"Fn::GetAtt": ["Key", "Arn"]} for s in kms), name
            else:  # a secret given as a parameter: the key given beside it, for it only
                assert secret["Ref"] in params, (name, secret)
                key_param = secret["Ref"].removesuffix("Arn") + "KmsKeyArn"
                assert key_param in params, (name, key_param)
                (grant,) = [s for s in kms if s["Resource"] == {"Ref": key_param}]
                context = grant["Condition"]["StringEquals"]["kms:EncryptionContext:SecretARN"]
                assert context == secret, name
        if not secrets:
            assert kms == [], (name, "decrypts without reading a secret")
    assert readers >= (2 if template == "compute.yaml" else 3)
    if template == "prefect-server.yaml":
        # The key the hosts are given is the one the auth string is encrypted with.
        assert doc["Outputs"]["AuthSecretKeyArn"]["Value"] == {"Fn::GetAtt": ["Key", "Arn"]}
        assert resources["AuthSecret"]["Properties"]["KmsKeyId"] == {"Ref": "Key"}


def test_the_workers_project_dir_is_the_one_the_deployments_are_made_with(
    compute: dict[str, Any],
) -> None:
    """The worker refuses pull steps other than the release's (set the working directory to
    its project directory): the hosts' directory must be the one docs/deploy-aws.md deploys
    prefect.yaml with, or every run would be refused."""
    from pathlib import Path

    user_data = json.dumps(compute["InferenceLaunchTemplate"])
    assert "IMG2IMG_PROJECT_DIR=/var/lib/img2img" in user_data
    assert "WorkingDirectory=/var/lib/img2img" in user_data
    deploy = (Path(__file__).parents[2] / "docs" / "deploy-aws.md").read_text()
    assert "IMG2IMG_PROJECT_DIR=/var/lib/img2img prefect --no-prompt deploy --all" in deploy


def test_the_api_is_reachable_from_the_hosts_groups_and_the_operators_only(
    server: dict[str, Any], compute: dict[str, Any]
) -> None:
    """No address range reaches the API: the hosts by their security groups (added by
    compute.yaml to the server's load balancer group), the operators by a prefix list; the
    load balancer reaches the tasks, and the tasks the database and Redis, by group."""
    lb = server["LoadBalancerSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in lb
    assert lb["SecurityGroupEgress"] == [
        {
            "IpProtocol": "-1",
            "CidrIp": "127.0.0.1/32",
            "Description": "none but LoadBalancerToTasks",
        }
    ]
    operators = server["OperatorsToLoadBalancer"]
    assert operators["Condition"] == "WithOperators"
    assert operators["Properties"]["SourcePrefixListId"] == {"Ref": "OperatorPrefixListId"}
    assert "ClientCidr" not in load_template("prefect-server.yaml")["Parameters"]
    egress = {
        name: r["Properties"]
        for name, r in of_type(server, "AWS::EC2::SecurityGroupEgress").items()
    }
    assert {(e["FromPort"], e["DestinationSecurityGroupId"]["Ref"]) for e in egress.values()} == {
        (4200, "TaskSecurityGroup"),
        (5432, "DatabaseSecurityGroup"),
        (6379, "RedisSecurityGroup"),
    }
    for rule in server["TaskSecurityGroup"]["Properties"]["SecurityGroupEgress"]:
        assert rule["FromPort"] == 443, rule  # only HTTPS (image, secrets, logs) leaves
    ins = {name: r for name, r in of_type(compute, "AWS::EC2::SecurityGroupIngress").items()}
    assert {r["Properties"]["SourceSecurityGroupId"]["Ref"] for r in ins.values()} == {
        "InferenceSecurityGroup",
        "ControlSecurityGroup",
    }
    for rule in ins.values():
        assert rule["Condition"] == "SelfHostedServer"
        assert rule["Properties"]["GroupId"] == {"Ref": "PrefectLoadBalancerSecurityGroupId"}
        assert rule["Properties"]["FromPort"] == rule["Properties"]["ToPort"] == 443
    outputs = load_template("prefect-server.yaml")["Outputs"]
    assert outputs["LoadBalancerSecurityGroupId"]["Value"] == {"Ref": "LoadBalancerSecurityGroup"}


def _user_data(template: dict[str, Any]) -> str:
    """A launch template's user-data script (the text of its Fn::Sub)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str) and node.startswith("#!/bin/bash"):
            found.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(template)
    (script,) = found
    return script


def test_hosts_install_the_checked_wheel_and_its_hash_locked_requirements_only(
    compute: dict[str, Any],
) -> None:
    """No install drifts: the wheel is checked against its SHA-256 before use, every
    dependency comes from the lock it carries with --require-hashes, and nothing else is
    resolved from the registry at boot."""
    import re

    params = load_template("compute.yaml")["Parameters"]
    assert params["ProjectWheelSha256"]["AllowedPattern"] == "^[0-9a-f]{64}$"
    assert "Default" not in params["ProjectWheelSha256"]
    for template, lock in (
        ("InferenceLaunchTemplate", "inference"),
        ("ControlLaunchTemplate", "control"),
    ):
        script = _user_data(compute[template])
        check = script.index('echo "${ProjectWheelSha256}  $WHEEL" | sha256sum --check --strict -')
        installs = [m.start() for m in re.finditer(r"pip install", script)]
        assert installs and all(i > check for i in installs), template
        lines = re.findall(r"pip install.*", script)
        assert len(lines) == 2, lines
        wanted = f"--require-hashes --no-deps -r /tmp/img2img-wheel/infra/release/locks/{lock}.txt"
        assert lines[0].endswith(wanted), lines
        assert lines[1].endswith('--no-deps --no-index "$WHEEL"'), lines
    assert "sys.version_info >= (3, 11)" in json.dumps(compute["InferenceLaunchTemplate"])


def test_the_server_image_is_pinned_by_digest_with_prefect_redis_built_in(
    server: dict[str, Any],
) -> None:
    from pathlib import Path

    params = load_template("prefect-server.yaml")["Parameters"]
    assert params["PrefectImage"]["AllowedPattern"].endswith("@sha256:[0-9a-f]{64}$")
    for task in ("ApiTask", "ServicesTask"):
        command = _container(server, task)["Command"][-1]
        assert "pip install" not in command, task  # prefect-redis is in the image
    dockerfile = (Path(__file__).parents[2] / "infra/aws/server-image/Dockerfile").read_text()
    assert "--require-hashes --no-deps -r /tmp/server.txt" in dockerfile
    assert "PREFECT_IMAGE must be pinned by digest" in dockerfile


def _statements_of(resources: dict[str, Any], policy: str) -> list[dict[str, Any]]:
    return list(resources[policy]["Properties"]["PolicyDocument"]["Statement"])


def test_the_models_bucket_is_written_only_by_its_named_writers(storage: dict[str, Any]) -> None:
    """It holds the wheel and the compiled artifacts every host runs: whoever else may
    write S3 in the account is denied there (a bucket policy deny beats any IAM allow)."""
    props = storage["ModelsBucket"]["Properties"]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    by_sid = {s["Sid"]: s for s in _statements_of(storage, "ModelsBucketPolicy")}
    writes = by_sid["OnlyTheNamedWritersWrite"]
    assert writes["Effect"] == "Deny" and writes["Principal"] == "*"
    assert {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(writes["Action"])
    assert writes["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": {"Ref": "ModelsWriterArns"}}}
    change = by_sid["OnlyTheNamedWritersChangeTheBucket"]
    assert "s3:PutBucketVersioning" in change["Action"]
    params = load_template("storage.yaml")["Parameters"]
    assert "Default" not in params["ModelsWriterArns"]  # named at deploy, never "anyone"
    outputs = load_template("storage.yaml")["Outputs"]
    assert outputs["ModelsBucket"]["Export"] == {
        "Name": {"Fn::Sub": "${AWS::StackName}-ModelsBucket"}
    }


def test_every_queue_is_tls_only_and_outcomes_expire(
    storage: dict[str, Any], notify: dict[str, Any]
) -> None:
    for resources, queues in (
        (storage, ("IngestQueue", "DeadLetterQueue")),
        (notify, ("AppQueue", "RetryableFailuresQueue")),
    ):
        policies = of_type(resources, "AWS::SQS::QueuePolicy").values()
        for queue in queues:
            (policy,) = [p for p in policies if p["Properties"]["Queues"] == [{"Ref": queue}]]
            statements = policy["Properties"]["PolicyDocument"]["Statement"]
            assert any(
                s["Effect"] == "Deny"
                and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                for s in statements
            ), queue
    rules = storage["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (expiry,) = [r for r in rules if r["Id"] == "expire-outcomes"]
    assert expiry["ExpirationInDays"] == {"Ref": "ResultExpiryDays"}


def test_only_the_pipeline_roles_put_events_on_the_bus(notify: dict[str, Any]) -> None:
    policy = notify["OutcomeBusPolicy"]
    assert policy["Condition"] == "WithEventBus"
    statement = policy["Properties"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "events:PutEvents"
    allowed = statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert [json.dumps(a) for a in allowed] == [
        json.dumps({"Fn::ImportValue": {"Fn::Sub": "${ComputeStack}-WorkerRoleArn"}}),
        json.dumps({"Fn::ImportValue": {"Fn::Sub": "${ComputeStack}-ControlRoleArn"}}),
    ]


def test_hosts_get_session_manager_and_no_other_ssm_reads(compute: dict[str, Any]) -> None:
    for role in ("WorkerRole", "ControlRole"):
        assert compute[role]["Properties"]["ManagedPolicyArns"] == [{"Ref": "SessionManagerPolicy"}]
    text = json.dumps(compute)
    assert "AmazonSSMManagedInstanceCore" not in text
    statements = compute["SessionManagerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert not [a for a in actions if a.startswith("ssm:Get") or a.endswith("*")], actions
    assert not [a for a in actions if a.split(":")[0] not in ("ssm", "ssmmessages", "ec2messages")]

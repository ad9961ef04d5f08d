"""Create the local stack's work pool and prefect-aws credentials block (idempotent).

Run as `python -m infra.local.blocks` with PREFECT_API_URL pointing at the local server.
The block's endpoint points at moto and turns S3 Express session auth off, which only the
emulator needs (botocore's `disable_s3_express_session_auth`); on AWS the block has no
endpoint and session auth stays on.
"""

from __future__ import annotations

import contextlib
import json
import os

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect_aws import AwsClientParameters, AwsCredentials

from img2img.config.settings import Settings, load_settings
from img2img.pipeline.topology import ROLES, pools
from infra.local.env import PROJECT_DIR
from infra.local.stack import CREDENTIALS_BLOCK, LOCAL_AWS_KEY

LOCAL_ALERT_BLOCK = "img2img-local-alerts"

TEMPLATE = PROJECT_DIR / "deployments" / "worker" / "base-job-templates" / "img2img-warm.json"


def main() -> None:
    save_credentials_block(os.environ["IMG2IMG_AWS__ENDPOINT_URL"])
    # Every pipeline pool of either topology: `prefect deploy --all` deploys to each, and
    # a stack brought up the other way finds its pools there.
    for role in ROLES:
        ensure_pool(role.pool, os.environ.get("IMG2IMG_LOCAL__WORKER_TYPE", "img2img-warm"))
    ensure_pool("control", "process")
    ensure_pool("compile", "process")
    apply_alerts(load_settings())


def apply_alerts(settings: Settings) -> None:
    """The alerts of deployments/services/alerts.yaml, through `monitor.alert_block` when it is set,
    else through the stack's own webhook block (`local.alert_webhook_url`; run
    `img2img alerts listen` to see them arrive)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from deployments.services.alerts import apply, block_document_id, pipeline_definitions

    block = settings.monitor.alert_block
    if block is None:
        CustomWebhookNotificationBlock(
            name=LOCAL_ALERT_BLOCK,
            url=settings.local.alert_webhook_url,
            json_data={"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"},
            timeout=5,
        ).save(LOCAL_ALERT_BLOCK, overwrite=True)
        block = f"custom-webhook/{LOCAL_ALERT_BLOCK}"
    with get_client(sync_client=True) as client:
        roles = pools(settings.topology, settings.autoscaler.pool)
        apply(client, pipeline_definitions(roles, block_document_id(client, block)))


def save_credentials_block(endpoint: str) -> None:
    """The flows' AWS access: fixed emulator credentials and the endpoint they talk to
    (moto, or the chaos scenario's fault proxy in front of it)."""
    AwsCredentials(
        aws_access_key_id=LOCAL_AWS_KEY,
        aws_secret_access_key=LOCAL_AWS_KEY,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_client_parameters=AwsClientParameters(
            endpoint_url=endpoint,
            config={"s3": {"disable_s3_express_session_auth": True}},
        ),
    ).save(CREDENTIALS_BLOCK, overwrite=True)


def ensure_pool(name: str, pool_type: str) -> None:
    """Create the work pool with `pool_type` (with its base job template from deployments/
    for the warm type), replacing a local pool of another type."""
    template = json.loads(TEMPLATE.read_text()) if pool_type == "img2img-warm" else None
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            existing = None
        if existing is not None and existing.type != pool_type:
            client.delete_work_pool(name)
            existing = None
        if existing is None:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(
                    WorkPoolCreate(name=name, type=pool_type, base_job_template=template or {})
                )
        elif template is not None and existing.base_job_template != template:
            client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))


if __name__ == "__main__":
    main()

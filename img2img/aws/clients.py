"""The one place that builds boto3 clients, from settings or from a prefect-aws block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from img2img.config.aws import AwsSettings
from img2img.errors import ObjectMissing, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class AwsClients:
    """The clients the pipeline uses; built once per process and shared by threads."""

    s3: S3Client
    sqs: SQSClient
    sns: SNSClient
    events: EventBridgeClient


def botocore_config(aws: AwsSettings) -> dict[str, Any]:
    """botocore `Config` arguments for `aws`, as a plain dict (what prefect-aws stores too)."""
    config: dict[str, Any] = {
        "region_name": aws.region,
        "max_pool_connections": aws.max_pool_connections,
        "connect_timeout": aws.connect_timeout_s,
        "read_timeout": aws.read_timeout_s,
        "retries": {"mode": "adaptive", "max_attempts": aws.max_attempts},
    }
    if not aws.express_session_auth:
        # The only spelling botocore honours (the other spellings fail with KeyError:
        # 'Credentials'); needed for moto, never on AWS.
        config["s3"] = {"disable_s3_express_session_auth": True}
    return config


def clients_from_settings(aws: AwsSettings) -> AwsClients:
    """Clients from the default credential chain, pointed at `aws.endpoint_url` when set."""
    session = boto3.Session(region_name=aws.region)
    return clients_from_session(session, aws.endpoint_url, botocore_config(aws))


def clients_from_session(
    session: boto3.Session, endpoint_url: str | None, config: dict[str, Any]
) -> AwsClients:
    """Clients from an existing boto3 session (for example a prefect-aws block's)."""
    cfg = Config(**config)
    return AwsClients(
        s3=session.client("s3", endpoint_url=endpoint_url, config=cfg),
        sqs=session.client("sqs", endpoint_url=endpoint_url, config=cfg),
        sns=session.client("sns", endpoint_url=endpoint_url, config=cfg),
        events=session.client("events", endpoint_url=endpoint_url, config=cfg),
    )


def clients_from_block(block: Any, aws: AwsSettings) -> AwsClients:
    """Clients from a prefect-aws `AwsCredentials` block.

    The block holds the credentials and `aws_client_parameters` (endpoint, botocore config);
    the settings fill in what the block leaves unset, so timeouts and pools stay bounded.
    """
    params = block.aws_client_parameters
    config = botocore_config(aws)
    config.update(params.config or {})
    endpoint = params.endpoint_url or aws.endpoint_url
    return clients_from_session(block.get_boto3_session(), endpoint, config)


# The one list of "not there" answers: a GET's NoSuchKey, a HEAD's bare 404. Lookups that
# ask "is there an outcome yet?" treat only these as no; a missing bucket is a fault there.
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# For an upload being read, a missing bucket means the object is gone as well.
_GONE_CODES = MISSING_OBJECT_CODES | {"NoSuchBucket"}
# Error codes that mean "try again later", for every service the pipeline calls.
RETRYABLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    # A conditional write that met another write of the same key in flight (409): which of
    # the two lands is not known yet, so the write is tried again (then 412 or success).
    "ConditionalRequestConflict",
}


def translate_error(exc: Exception, what: str) -> Exception:
    """Map a botocore error on `what` (for example "s3://b/k") onto the img2img error tree."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _GONE_CODES:
            return ObjectMissing(f"{what} does not exist ({code})")
        if code in RETRYABLE_CODES:
            return StorageUnavailable(f"{what}: {code}")
        return exc
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"{what}: {exc}")
    return exc


def is_missing_object(exc: Exception) -> bool:
    """True for the answer to a read of a key that does not exist."""
    return isinstance(exc, ClientError) and (
        str(exc.response.get("Error", {}).get("Code", "")) in MISSING_OBJECT_CODES
    )


def is_precondition_failed(exc: Exception) -> bool:
    """True for the answer to a conditional write whose key already exists."""
    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"PreconditionFailed", "412"}


def service_client(aws: AwsSettings, service: str) -> Any:
    """A client for any other service (autoscaling, ecs, cloudwatch) from the same settings."""
    session = boto3.Session(region_name=aws.region)
    return session.client(
        service,
        endpoint_url=aws.endpoint_url,  # type: ignore[call-overload]
        config=Config(**botocore_config(aws)),
    )

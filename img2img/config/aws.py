"""How to reach AWS, and the buckets and queues of the data path.

Environment: `IMG2IMG_AWS__*`, `IMG2IMG_STORAGE__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class AwsSettings(BaseModel):
    """How to reach AWS (or the local emulator that stands in for it)."""

    region: str = Field("us-east-1", description="AWS Region of every client.")
    endpoint_url: str | None = Field(
        None,
        description="Endpoint of an S3/SQS emulator such as http://127.0.0.1:4566; None on AWS.",
    )
    express_session_auth: bool = Field(
        True,
        description="S3 Express One Zone session auth (CreateSession). Keep on against AWS; "
        "the local emulator needs it off.",
    )
    credentials_block: str | None = Field(
        None,
        description="Name of a prefect-aws AwsCredentials block; when set, flows build their "
        "clients from it instead of from these settings.",
    )
    max_pool_connections: int = Field(
        32, ge=1, le=1024, description="HTTP connections per client (bounds copy concurrency)."
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="Connect timeout per call.")
    read_timeout_s: float = Field(30.0, gt=0, le=900, description="Read timeout per call.")
    max_attempts: int = Field(
        4, ge=1, le=20, description="botocore attempts per call (adaptive retry mode)."
    )


class StorageSettings(BaseModel):
    """The buckets and queues of the data path."""

    uploads_bucket: str = Field(
        "img2img-uploads", description="General-purpose bucket that users upload to."
    )
    extra_upload_buckets: list[str] = Field(
        default_factory=list,
        description="Other buckets whose events are accepted; events naming any other bucket "
        "go to the dead-letter queue.",
    )
    stage_bucket: str = Field(
        "img2img-stage--use1-az4--x-s3",
        description="S3 Express One Zone directory bucket for the hot path (inputs, stage "
        "outputs).",
    )
    results_bucket: str = Field(
        "img2img-results", description="Bucket for results and failure records."
    )
    ingest_queue: str = Field("img2img-ingest", description="SQS queue fed by S3 notifications.")
    dead_letter_queue: str = Field("img2img-ingest-dlq", description="Its dead-letter queue.")
    copy_concurrency: int = Field(
        16, ge=1, le=256, description="Parallel CopyObject calls into the directory bucket."
    )

    @property
    def upload_buckets(self) -> frozenset[str]:
        """Every bucket whose uploads the pipeline accepts."""
        return frozenset([self.uploads_bucket, *self.extra_upload_buckets])

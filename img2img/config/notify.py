"""Where each upload's outcome is announced to the app.

Environment: `IMG2IMG_NOTIFY__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class NotifySettings(BaseModel):
    """Where each upload's outcome is announced to the app: one message per result or failure
    record, to an SNS topic, an EventBridge bus, or both (neither: no messages)."""

    topic_arn: str | None = Field(
        None,
        description="SNS topic that gets one message per outcome (a `.fifo` topic also gets "
        "a de-duplication id and a message group per upload key).",
    )
    event_bus: str | None = Field(
        None,
        description="EventBridge bus (name or ARN) that gets the same message as an event "
        "(source `img2img`, detail-type `img2img outcome`).",
    )
    presign_s: int = Field(
        0,
        ge=0,
        le=7 * 86_400,
        description="Lifetime of a presigned GET URL of the result added to the message "
        "(0: no URL; S3 caps it at 7 days, and at the signing credentials' own expiry).",
    )

    writer_grace_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="An outcome another run wrote and has not announced yet is left to that "
        "run (which tags it right after its send) for this long after it was written; "
        "announced by whoever finds it untagged after that (its writer died).",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.topic_arn or self.event_bus)

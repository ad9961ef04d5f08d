"""The S3-event dispatcher: long polling and micro-batching.

Environment: `IMG2IMG_DISPATCH__*`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class DispatchSettings(BaseModel):
    """The S3-event dispatcher: long polling and micro-batching."""

    deployment: str | None = Field(
        None,
        description="Deployment the dispatcher creates runs of, as FLOW_NAME/DEPLOYMENT_NAME. "
        "None: the topology's first (img2img-pipeline/inf2, or img2img-generate/inf2-generate "
        "when split).",
    )
    base_batch: int = Field(
        8,
        ge=1,
        le=4096,
        description="Images in one flow run at low load (nothing waiting beyond the batch): "
        "it leaves at this size or after max_wait_s, or at once while the pool can take a run "
        "(adaptive: none of its runs waits for a slot). With adaptive off, every batch's size.",
    )
    max_batch: int = Field(
        512,
        ge=1,
        le=4096,
        description="Most images in one flow run: the ceiling batches grow to under a backlog "
        "(adaptive); below base_batch, it caps that too.",
    )
    adaptive: bool = Field(
        True,
        description="Size each batch from what is waiting (the messages in hand, the queue's "
        "depth, the rate since the last batch), spread over the runs the pool can hold at "
        "once; off: fixed batches of base_batch.",
    )
    full_window_rate: float = Field(
        100.0,
        gt=0,
        le=100_000,
        description="(adaptive) While the pool can take a run, what is in hand leaves after a "
        "window that grows with the arrival rate: none for a lone upload, max_wait_s × rate ÷ "
        "this (images/s per dispatcher), all of max_wait_s from this rate up. A run costs the "
        "Prefect server the same whatever it holds: the window spends the server on latency "
        "while uploads are few and gathers images per run as they come faster.",
    )
    claim_events: bool = Field(
        True,
        description="While runs wait for a slot (adaptive), hear on Prefect's events stream "
        "when one is claimed or starts, and send what is held as soon as the pool can take a "
        "run, instead of reading the count of waiting runs again once a second (which it "
        "still does while the stream is down).",
    )
    max_wait_s: float = Field(
        2.0, ge=0, le=300, description="Longest an image waits for its batch to fill."
    )
    max_run_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Under a steady rate (adaptive), a batch holds what arrives in max_wait_s "
        "(one run per max_wait_s: the Prefect server's cost per image falls as the rate "
        "rises) but no more than a run does in this long on its slot, judged from the "
        "deployment's recent runs; it bounds what a bigger batch adds to an image's latency.",
    )
    max_hold_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Under a backlog, longest a batch's oldest image waits for the batch to "
        "fill (at most visibility_timeout_s − 30 s, so messages held never reappear).",
    )
    poll_wait_s: int = Field(
        2, ge=0, le=20, description="SQS long-poll wait per ReceiveMessage call."
    )
    visibility_timeout_s: int = Field(
        120, ge=10, le=43200, description="How long received messages stay hidden from others."
    )
    dedup_window: int = Field(
        100_000, ge=0, description="Recently dispatched objects remembered in memory."
    )

    @model_validator(mode="after")
    def _batch_fits_visibility(self) -> DispatchSettings:
        if self.max_wait_s + 30 > self.visibility_timeout_s:
            raise ValueError(
                "dispatch.visibility_timeout_s must exceed dispatch.max_wait_s by at least 30 s "
                f"(messages would reappear while batching), but max_wait_s={self.max_wait_s} "
                f"and visibility_timeout_s={self.visibility_timeout_s}"
            )
        return self

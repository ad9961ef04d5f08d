"""Stage outputs kept in the directory bucket let a stage be retried without its predecessor."""

from __future__ import annotations

from PIL import Image

from img2img.intake.events import ObjectRef
from img2img.intake.params import ImageParams
from img2img.pipeline.jobs import ImageJob
from img2img.pipeline.stages.spec import GENERATE
from img2img.pipeline.steps import StageOutputs, run_stage
from tests.conftest import AwsEnv


def test_a_kept_generate_output_is_reused_instead_of_recomputed(aws: AwsEnv) -> None:
    clients, settings = aws
    calls: list[str] = []

    def infer(jobs: list[ImageJob]) -> list[Image.Image]:
        calls.extend(job.ref.key for job in jobs)
        return [Image.new("RGB", (8, 8), (1, 2, 3)) for _ in jobs]

    def fresh_job() -> ImageJob:
        job = ImageJob.for_ref(ObjectRef(bucket="u", key="k.png", etag="e"))
        job.params, job.image = ImageParams(), Image.new("RGB", (8, 8))
        return job

    outputs = StageOutputs(clients.s3, settings.storage.stage_bucket)
    first = fresh_job()
    run_stage([first], GENERATE, infer, outputs, resume=True)
    assert outputs.close() == []
    assert calls == ["k.png"]

    # A later attempt (stage 2 failed, the run is retried): stage 1 is not run again.
    outputs = StageOutputs(clients.s3, settings.storage.stage_bucket)
    second = fresh_job()
    run_stage([second], GENERATE, infer, outputs, resume=True)
    outputs.close()
    assert calls == ["k.png"]
    assert second.generate is not None and second.generate.getpixel((0, 0)) == (1, 2, 3)

"""`img2img bench pipeline`: N images through the whole local path (upload → S3 event →
dispatcher → flow run on the worker → results), on a stack of its own.

It runs on a separate local stack (its own state folder and ports), so the demo stack is
left alone; the worker and dispatcher are restarted per configuration with the backend,
worker type and batch size under test.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from img2img.aws.clients import clients_from_settings
from img2img.config.settings import Settings
from infra.bench.metrics import pipeline_figures
from infra.local import demo
from infra.local.env import stack_beside
from infra.local.stack import LOCAL_AWS_KEY, LocalStack


@dataclass(frozen=True)
class BenchConfig:
    images: int
    batch_size: int
    backend: str
    worker: str  # img2img-warm | process
    generate_ms: float
    upscale_ms: float
    load_s: float
    timeout_s: float
    steps: int
    upscale_steps: int
    device_batch: int = 4  # most images per device call (eager, simulated)
    image_share: float = 0.35  # simulated: what each further image adds to a call


def bench_settings(base: Settings, state_dir: Path) -> Settings:
    """The benchmark stack: its own state folder and ports next to the demo stack's."""
    # One fixed worker and no autoscaler: this measures the worker, not scaling.
    local = stack_beside(base.local, state_dir, 10, workers=1, autoscaler=False)
    return base.model_copy(update={"local": local})


def run_one(settings: Settings, cfg: BenchConfig, label: str, say: Any) -> dict[str, Any]:
    """Run `cfg.images` images through the stack with `cfg.worker`; returns the figures."""
    local = settings.local.model_copy(update={"worker_type": cfg.worker})
    settings = settings.model_copy(update={"local": local})
    env = {
        "IMG2IMG_STAGES__BACKEND": cfg.backend,
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": str(cfg.generate_ms),
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": str(cfg.upscale_ms),
        "IMG2IMG_STAGES__SIMULATED__LOAD_S": str(cfg.load_s),
        "IMG2IMG_STAGES__SIMULATED__IMAGE_SHARE": str(cfg.image_share),
        "IMG2IMG_STAGES__DEVICE_BATCH": str(cfg.device_batch),
        "IMG2IMG_DISPATCH__MAX_BATCH": str(cfg.batch_size),
        "IMG2IMG_DISPATCH__BASE_BATCH": str(cfg.batch_size),
        "IMG2IMG_DISPATCH__ADAPTIVE": "false",  # this bench compares fixed batch sizes
    }
    stack = LocalStack(settings, extra_env=env)
    # The supervisor too: it would restart the dispatcher with the last configuration's
    # environment (it keeps the one it started with); `up` starts it again with this one.
    stack.stop(["supervisor", "worker-*", "dispatcher"], say)
    for name in ("worker-0", "dispatcher"):
        stack.log_path(name).unlink(missing_ok=True)
    stack.up(say)
    slots = settings.worker.slot_count()
    marker = ": ready (pid" if cfg.worker == "img2img-warm" else "started!"
    wait_for_log(
        stack.log_path("worker-0"),
        marker,
        slots if cfg.worker != "process" else 1,
        timeout_s=max(120.0, cfg.load_s * 3),
    )
    say(f"{label}: worker ready; uploading {cfg.images} images")

    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", LOCAL_AWS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", LOCAL_AWS_KEY)
    aws = settings.aws.model_copy(
        update={"endpoint_url": settings.local.moto_url, "express_session_auth": False}
    )
    s3 = clients_from_settings(aws).s3
    started = datetime.now(UTC)
    refs = demo.upload_samples(
        s3, settings.storage.uploads_bucket, cfg.images, cfg.steps, cfg.upscale_steps
    )
    outcomes = demo.wait_for_outcomes(s3, settings.storage.results_bucket, refs, cfg.timeout_s)
    done = [o.doc for o in outcomes if o.status == "completed"]
    missing = len(refs) - len(done)
    if missing:
        raise RuntimeError(f"{label}: {missing} of {len(refs)} images did not complete")
    figures = pipeline_figures(done, started, slots)
    return {
        "images": cfg.images,
        "backend": cfg.backend,
        "worker": label,
        "batch_size": cfg.batch_size if cfg.worker != "process" else 1,
        "device_batch": cfg.device_batch if cfg.worker != "process" else 1,
        **figures,
    }


def wait_for_log(path: Path, marker: str, count: int, timeout_s: float) -> None:
    """Until `marker` appears `count` times in the log at `path` (a worker's slots ready)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(marker) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"worker not ready after {timeout_s:.0f} s; see {path}")


def run_bench(
    base: Settings,
    cfg: BenchConfig,
    compare: bool,
    state_dir: Path,
    as_json: bool,
    keep: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    device_batches: list[int] | None = None,
) -> list[dict[str, Any]]:
    """The warm worker once per device batch size (`device_batches`, default the config's
    own; the first is the baseline of `speedup_vs_device_batch_N`), then, with `compare`,
    the stock process worker."""
    settings = bench_settings(base, state_dir)

    def say(message: str) -> None:
        print(f"  {message}", file=err, flush=True)

    if cfg.backend == "simulated":
        say(
            f"SIMULATED device: stage 1 {cfg.generate_ms:.0f} ms/call, stage 2 "
            f"{cfg.upscale_ms:.0f} ms/call for one image, each further image in a call "
            f"+{cfg.image_share:.0%}, model load {cfg.load_s:.1f} s per process "
            "(no CPU used while waiting)"
        )
    rows: list[dict[str, Any]] = []
    stack = LocalStack(settings)
    try:
        for size in device_batches or [cfg.device_batch]:
            one = BenchConfig(**{**cfg.__dict__, "device_batch": size})
            rows.append(run_one(settings, one, "warm", say))
        warm = rows[-1]
        first = rows[0]
        if len(rows) > 1 and first["images_per_s"]:
            for row in rows[1:]:
                row[f"speedup_vs_device_batch_{first['device_batch']}"] = round(
                    row["images_per_s"] / first["images_per_s"], 2
                )
        if compare:
            process_cfg = BenchConfig(**{**cfg.__dict__, "worker": "process", "batch_size": 1})
            proc = run_one(settings, process_cfg, "process", say)
            rows.append(proc)
            warm["speedup_vs_process_worker"] = (
                round(warm["images_per_s"] / proc["images_per_s"], 2)
                if proc["images_per_s"]
                else None
            )
    finally:
        if not keep:
            stack.down(say)
    _print_table(rows, err)
    if as_json:
        if compare:  # the warm line (with the ratio) last
            rows = rows[-1:] + rows[:-1]
        for row in rows:
            print(
                json.dumps(
                    {
                        k: row[k]
                        for k in (
                            "images",
                            "backend",
                            "worker",
                            "device_batch",
                            "images_per_s",
                            "duty_cycle",
                            "overhead_ms_per_image",
                            "stage_p50_ms",
                        )
                        if k in row
                    }
                    | {k: v for k, v in row.items() if k.startswith("speedup_vs_")}
                    | {
                        "batch_size": row["batch_size"],
                        "stage_p95_ms": row["stage_p95_ms"],
                        "wall_s": row["wall_s"],
                    }
                ),
                file=out,
            )
    return rows


def _print_table(rows: list[dict[str, Any]], err: TextIO) -> None:
    print(
        f"{'worker':<10}{'batch':>6}{'images':>8}{'img/s':>9}{'duty':>7}"
        f"{'overhead ms/img':>17}{'generate p50':>12}{'upscale p50':>12}{'total p95':>11}",
        file=err,
    )
    for r in rows:
        print(
            f"{r['worker']:<10}{r['batch_size']:>6}{r['images']:>8}{r['images_per_s']:>9.3f}"
            f"{r['duty_cycle']:>7.3f}{r['overhead_ms_per_image']:>17.1f}"
            f"{r['stage_p50_ms'].get('generate', 0):>12.1f}"
            f"{r['stage_p50_ms'].get('upscale', 0):>12.1f}"
            f"{r['stage_p95_ms'].get('total', 0):>11.1f}",
            file=err,
        )
    if len(rows) == 2 and "speedup_vs_process_worker" in rows[0]:
        print(
            f"speedup of the warm worker over the stock process worker: "
            f"{rows[0]['speedup_vs_process_worker']}x",
            file=err,
        )

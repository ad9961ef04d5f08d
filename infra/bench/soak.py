"""`img2img bench soak`: a steady upload rate for a long time, and what every long-running
process of the stack does with its memory meanwhile.

A stack of its own (state folder `bench-soak`, ports next to the demo stack's), as a new
user gets it: the autoscaler from one worker, the stage models eager and tiny (or the
simulated device). Uploads arrive open-loop at `rate` a second for `minutes`; every
`sample_s` the resident memory (VmRSS) of each process the stack started, and of each
worker's slot processes, is read from /proc with its role. After the warm-up, each process
that lived through most of the window gets a least-squares growth per hour
(`soak_figures`). It prints one JSON line per role, then the summary line:

    {"soak": {...config}, "uploads", "results", "failure_records", "lost", "duplicated",
     "recycles", "recycle_s_max", "images_during_recycles", "e2e_p95_s_during_recycles",
     "e2e_p95_s_otherwise", "device_batch_s_p50", "over_goal": [...], "chart": path}

and draws the RSS of every process over time (`chart`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from img2img.config.settings import Settings
from img2img.intake.events import ObjectRef
from img2img.slots.memory import rss_mb_of as rss_mb
from infra.bench.control_plane import upload_at
from infra.bench.pipeline import wait_for_log
from infra.bench.soak_figures import Sample, over_goal, recycle_figures, role_figures
from infra.local.env import local_clients, stack_beside
from infra.local.stack import LocalStack

# The goals, MB of growth per hour after warm-up (the worst process of each role).
GOALS = {
    "slot": 20.0,
    "worker": 10.0,
    "dispatcher": 10.0,
    "autoscaler": 10.0,
    "recovery": 10.0,
}
SPAWNED_SLOT = "multiprocessing.spawn"
RESOURCE_TRACKER = "multiprocessing.resource_tracker"
_INDEXED = re.compile(r"-\d+(\.draining)?$")


@dataclass(frozen=True)
class SoakConfig:
    rate: float  # uploads a second
    minutes: float
    warmup_s: float
    sample_s: float
    backend: Literal["eager", "simulated"]
    topology: Literal["single", "split"]
    workers: int  # at the start; the autoscaler does the rest
    drain_s: float = 600.0  # after the last upload, the longest wait for every outcome


def soak_settings(base: Settings, cfg: SoakConfig) -> Settings:
    """The soak's stack: its own state folder and ports, the topology asked for."""
    local = stack_beside(
        base.local,
        base.local.state_dir / "bench-soak",
        30,
        workers=cfg.workers,
        worker_type="img2img-warm",
    )
    settings = base.model_copy(update={"local": local})
    settings.topology = cfg.topology
    return settings


def stack_env(cfg: SoakConfig) -> dict[str, str]:
    if cfg.backend == "eager":
        return {"IMG2IMG_STAGES__BACKEND": "eager"}
    return {
        "IMG2IMG_STAGES__BACKEND": "simulated",
        "IMG2IMG_STAGES__SIMULATED__GENERATE_MS": "300",
        "IMG2IMG_STAGES__SIMULATED__UPSCALE_MS": "200",
        "IMG2IMG_STAGES__SIMULATED__LOAD_S": "1",
    }


# -- reading the processes ---------------------------------------------------------------------


def role_of(service: str) -> str:
    """A service's role from its process-table name: `worker-3` and `worker-3.draining` are
    workers, `upscale-worker-0` an upscale worker, `dispatcher-1` a dispatcher."""
    return _INDEXED.sub("", service)


def slot_role(worker_role: str) -> str:
    """The role of a worker's slot processes: `worker` → `slot`, `upscale-worker` →
    `upscale-slot`."""
    return worker_role[: -len("worker")] + "slot" if worker_role.endswith("worker") else "slot"


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stack_processes(pids_dir: Path) -> dict[int, str]:
    """pid → role of every process the stack started (its PID files) and of each worker's
    slot processes (its `multiprocessing` children, not its resource tracker)."""
    found: dict[int, str] = {}
    for pidfile in sorted(pids_dir.glob("*.pid")) if pids_dir.exists() else []:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if rss_mb(pid) is not None:
            found[pid] = role_of(pidfile.name.removesuffix(".pid"))
    children = _children()
    for pid, role in list(found.items()):
        if not role.endswith("worker"):
            continue
        for child in children.get(pid, []):
            if SPAWNED_SLOT in _cmdline(child):
                found[child] = slot_role(role)
    return found


class Sampler:
    """Samples the stack's processes every `every_s` from a thread of its own."""

    def __init__(self, pids_dir: Path, every_s: float) -> None:
        self.pids_dir = pids_dir
        self.every_s = every_s
        self.samples: list[Sample] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def begin(self) -> Sampler:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def now_s(self) -> float:
        return time.monotonic() - self.start

    def sample(self) -> None:
        at = self.now_s()
        for pid, role in stack_processes(self.pids_dir).items():
            mb = rss_mb(pid)
            if mb is not None:
                self.samples.append(Sample(at_s=at, pid=pid, role=role, rss_mb=mb))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every_s):
                return

    def end(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# -- the chart ---------------------------------------------------------------------------------


def draw(samples: list[Sample], warmup_s: float, end_s: float, title: str, path: Path) -> None:
    """RSS over time, one line per process, one colour per role; the warm-up and the last
    upload marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_pid: dict[int, list[Sample]] = {}
    for sample in samples:
        by_pid.setdefault(sample.pid, []).append(sample)
    roles = sorted({s.role for s in samples})
    palette = plt.get_cmap("tab10")
    colour = {role: palette(i % 10) for i, role in enumerate(roles)}
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
    labelled: set[str] = set()
    for rows in by_pid.values():
        role = rows[0].role
        ax.plot(
            [s.at_s / 60 for s in rows],
            [s.rss_mb for s in rows],
            color=colour[role],
            linewidth=1.4,
            label=None if role in labelled else role,
        )
        labelled.add(role)
    ax.axvline(warmup_s / 60, color="#888", linestyle="--", linewidth=1)
    ax.axvline(end_s / 60, color="#888", linestyle=":", linewidth=1)
    ax.text(warmup_s / 60, ax.get_ylim()[1], " warm-up ends", va="top", fontsize=8, color="#555")
    ax.text(end_s / 60, ax.get_ylim()[1], " last upload", va="top", fontsize=8, color="#555")
    ax.set_xlabel("minutes since the first upload")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# -- the benchmark -----------------------------------------------------------------------------


def run_soak(
    base: Settings,
    cfg: SoakConfig,
    chart: Path | None,
    keep: bool,
    out: TextIO,
    say: Callable[[str], None],
) -> dict[str, Any]:
    settings = soak_settings(base, cfg)
    stack = LocalStack(settings, extra_env=stack_env(cfg))
    say(
        f"soak: {cfg.rate} uploads/s for {cfg.minutes:g} min on the {cfg.backend} backend "
        f"({cfg.topology} topology, {cfg.workers} worker(s) to start, autoscaled), RSS every "
        f"{cfg.sample_s:g} s, fitted after {cfg.warmup_s:g} s"
    )
    sampler: Sampler | None = None
    try:
        stack.down(say)
        for log in stack.logs.glob("*.log") if stack.logs.exists() else []:
            log.unlink()
        stack.up(say)
        first = stack.roles[0].worker_prefix
        wait_for_log(stack.log_path(f"{first}-0"), ": ready (pid", 1, 600)
        os.environ["PREFECT_API_URL"] = settings.local.prefect_api_url
        clients = local_clients(settings)
        sampler = Sampler(stack.pids, cfg.sample_s).begin()
        began = time.time()
        refs = upload_at(
            clients.s3,
            settings.storage.uploads_bucket,
            cfg.rate,
            cfg.minutes * 60,
            f"soak-{time.strftime('%Y%m%d-%H%M%S')}",
        )
        end_s = sampler.now_s()
        say(f"{len(refs)} uploads in {end_s:.0f} s; waiting for their outcomes")
        _wait_outcomes(clients.s3, settings, refs, cfg.drain_s)
        sampler.end()
        from infra.local.audit import audit_local_stack

        counts = audit_local_stack(
            clients.s3, clients.sqs, settings, [r.pool for r in stack.roles], refs, say
        )
        lines = role_figures(sampler.samples, cfg.warmup_s, end_s)
        for line in lines:
            print(json.dumps(line), file=out, flush=True)
        summary: dict[str, Any] = {
            "soak": asdict(cfg),
            **{k: counts[k] for k in ("uploads", "results", "failure_records", "lost")},
            "duplicated": counts["duplicated"],
            **recycle_figures(
                _finished(clients.s3, settings, refs, began),
                _recycle_windows(stack, began),
            ),
            "over_goal": over_goal(lines, GOALS),
        }
        if chart is not None:
            title = (
                f"RSS per process: {cfg.rate} uploads/s for {cfg.minutes:g} min, "
                f"{cfg.backend} backend, {cfg.topology} topology"
            )
            draw(sampler.samples, cfg.warmup_s, end_s, title, chart)
            summary["chart"] = str(chart)
        print(json.dumps(summary), file=out, flush=True)
        return summary
    finally:
        if sampler is not None:
            sampler.end()
        if not keep:
            stack.down(say)


def _wait_outcomes(s3: Any, settings: Settings, refs: list[ObjectRef], limit_s: float) -> None:
    from img2img.delivery.outcomes import outcome_key

    bucket = settings.storage.results_bucket
    waiting = list(refs)
    deadline = time.monotonic() + limit_s
    while waiting and time.monotonic() < deadline:
        waiting = [r for r in waiting if outcome_key(s3, bucket, r) is None]
        if waiting:
            time.sleep(2.0)


def _finished(
    s3: Any, settings: Settings, refs: list[ObjectRef], began: float
) -> list[tuple[float, float, float]]:
    """(finished at, end-to-end seconds, its device batch's seconds) of each result, times
    in seconds since `began` (epoch)."""
    from img2img.intake.keys import keys_for

    out = []
    for ref in refs:
        try:
            body = s3.get_object(
                Bucket=settings.storage.results_bucket, Key=keys_for(ref).result_meta
            )
        except s3.exceptions.NoSuchKey:
            continue  # a failure record: no timings
        doc = json.loads(body["Body"].read())
        timings, batch = doc.get("timings_ms", {}), doc.get("device_batch", {})
        finished = datetime.fromisoformat(doc["finished_at"]).timestamp() - began
        device_ms = sum(timings.get(s, 0.0) * batch.get(s, 1) for s in ("generate", "upscale"))
        out.append((finished, timings.get("total", 0.0) / 1000, device_ms / 1000))
    return out


_CLOCK = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) ")


def _recycle_windows(stack: LocalStack, began: float) -> list[tuple[float, float]]:
    """(start, end) of every recycle in the workers' logs, in seconds since `began`: from
    "recycling it" to "recycled:" (one at a time per worker). The logs carry the time of
    day only; the soak is shorter than a day."""
    day = datetime.fromtimestamp(began).replace(hour=0, minute=0, second=0, microsecond=0)

    def at(line: str) -> float | None:
        m = _CLOCK.match(line)
        if m is None:
            return None
        h, mi, sec, ms = (int(g) for g in m.groups())
        t = day.timestamp() + h * 3600 + mi * 60 + sec + ms / 1000 - began
        return t if t > -3600 else t + 86_400  # past midnight

    windows = []
    for log in sorted(stack.logs.glob("*worker-*.log")) if stack.logs.exists() else []:
        start: float | None = None
        for line in log.read_text(errors="replace").splitlines():
            if "recycling it:" in line:
                start = at(line)
            elif "recycled: " in line and start is not None:
                end = at(line)
                if end is not None:
                    windows.append((start, end))
                start = None
    return windows

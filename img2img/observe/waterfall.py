"""Where each image's time went, start to finish, with nothing left out (pure, no I/O).

The stage columns measure each image's own work. Between them an image waits: for the
images ahead of it on the device, for the rest of its batch to finish a step, for the
orchestrator to start the next task. `image_line` lays the measured spans on the wall clock
and names every gap, so an image's segments add up to its whole time:

    queue wait (upload event → run start) | copy | … | waiting for the device | generate | …

An event's `eventTime` is the sender's claim: a message replayed from the dead-letter queue
or sent by hand can carry any time. When it lies outside `[run start − stale_after_s,
run start]`, the line starts at the run's start instead and says so (`origin`), and the
fleet figures leave its queue wait out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

QUEUE_WAIT = "queue wait"
WAIT_DEVICE = "waiting for the device"
WAIT_OTHER = "waiting (batch, orchestration)"
DEVICE_STAGES = frozenset({"generate", "upscale"})

# How a span's stage is named on the chart; stages not listed keep their own name.
LABELS = {
    "check": "outcome check",
    "copy": "copy",
    "download": "download",
    "preprocess": "preprocess",
    "generate": "stage 1: generate",
    "handoff": "hand-off to stage 2",
    "upscale": "stage 2: upscale",
    "postprocess": "encode",
    "upload": "upload",
}
# Segment labels in pipeline order (the chart's legend and the breakdown's rows).
ORDER: tuple[str, ...] = (
    QUEUE_WAIT,
    *LABELS.values(),
    WAIT_DEVICE,
    WAIT_OTHER,
)


@dataclass(frozen=True)
class Segment:
    label: str
    start_s: float  # from the line's origin
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class ImageLine:
    image: str
    status: str
    segments: tuple[Segment, ...]
    origin: str  # "upload event" or "run start"
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.segments[-1].end_s if self.segments else 0.0

    @property
    def from_upload_event(self) -> bool:
        """Whether the line starts at a trusted upload event (else at the run's start)."""
        return self.origin == "upload event"


def event_is_trusted(event_time: float | None, run_start: float, stale_after_s: float) -> bool:
    """Whether an upload's event time can stand for when it was uploaded: not after the
    run started (a clock a little ahead is allowed) and not longer before it than
    `stale_after_s`."""
    if event_time is None:
        return False
    age = run_start - event_time
    return -5.0 <= age <= stale_after_s


def image_line(
    image: str,
    status: str,
    spans: Sequence[tuple[str, float, float]],
    run_start: float,
    ended: float | None,
    event_time: float | None,
    stale_after_s: float,
) -> ImageLine:
    """One image's segments. `spans` are (stage, start, end) in epoch seconds, as
    `Timings.measure` keeps them; nested spans (a download inside preprocess) are cut so
    the inner one shows. `ended` is when the image's outcome was written."""
    trusted = event_is_trusted(event_time, run_start, stale_after_s)
    note = ""
    if event_time is not None and not trusted:
        note = f"event time {_age_words(run_start - event_time)} the run's start: left out"
    origin = min(event_time, run_start) if trusted and event_time is not None else run_start
    end = max([run_start, *(e for _, _, e in spans), *([ended] if ended is not None else [])])
    painted = _paint(spans, run_start, end)
    segments: list[Segment] = []
    if origin < run_start:
        segments.append(Segment(QUEUE_WAIT, 0.0, run_start - origin))
    for i, (stage, start, stop) in enumerate(painted):
        if stage is None:
            following = next((s for s, _, _ in painted[i + 1 :] if s is not None), None)
            label = WAIT_DEVICE if following in DEVICE_STAGES else WAIT_OTHER
        else:
            label = LABELS.get(stage, stage)
        _append(segments, Segment(label, start - origin, stop - origin))
    return ImageLine(
        image, status, tuple(segments), "upload event" if trusted else "run start", note
    )


def breakdown(lines: Iterable[ImageLine]) -> dict[str, float]:
    """Seconds per segment label over all lines, in pipeline order (labels with no time
    left out)."""
    totals: dict[str, float] = {}
    for line in lines:
        for seg in line.segments:
            totals[seg.label] = totals.get(seg.label, 0.0) + seg.seconds
    ordered = [k for k in ORDER if k in totals] + sorted(k for k in totals if k not in ORDER)
    return {k: totals[k] for k in ordered if totals[k] > 0}


def wait_columns(line: ImageLine) -> dict[str, float]:
    """The two waiting columns of the timing table, in ms, so that its columns add up."""
    out = {"device_wait": 0.0, "other_wait": 0.0}
    for seg in line.segments:
        if seg.label == WAIT_DEVICE:
            out["device_wait"] += seg.seconds * 1000.0
        elif seg.label == WAIT_OTHER:
            out["other_wait"] += seg.seconds * 1000.0
    return out


def _paint(
    spans: Sequence[tuple[str, float, float]], start: float, end: float
) -> list[tuple[str | None, float, float]]:
    """Cut [start, end] at every span boundary; each piece belongs to the innermost span
    covering it (the one that started last; of two that started together, the shorter),
    or to no span (None: a gap)."""
    clipped = [(s, max(a, start), min(b, end)) for s, a, b in spans if b > start and a < end]
    cuts = sorted({start, end, *(a for _, a, _ in clipped), *(b for _, _, b in clipped)})
    pieces: list[tuple[str | None, float, float]] = []
    for a, b in pairwise(cuts):
        if b <= a:
            continue
        covering = [(sa, -sb, s) for s, sa, sb in clipped if sa <= a and sb >= b]
        stage = max(covering)[2] if covering else None
        if pieces and pieces[-1][0] == stage:
            pieces[-1] = (stage, pieces[-1][1], b)
        else:
            pieces.append((stage, a, b))
    return pieces


def _append(segments: list[Segment], seg: Segment) -> None:
    if segments and segments[-1].label == seg.label and segments[-1].end_s == seg.start_s:
        segments[-1] = Segment(seg.label, segments[-1].start_s, seg.end_s)
    else:
        segments.append(seg)


def _age_words(age_s: float) -> str:
    if age_s < 0:
        return f"{_span_words(-age_s)} after"
    return f"{_span_words(age_s)} before"


def _span_words(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"

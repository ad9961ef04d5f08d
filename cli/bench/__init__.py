"""Command group: `img2img bench pipeline | models | device | scaling | control-plane |
latency | capacity | soak | lanes`, one module per sub-command (its arguments beside it); what each
measures, and its tables and verdicts, live in `infra/bench/`."""

from __future__ import annotations

from typing import Any

from cli.bench import (
    capacity,
    control_plane,
    device,
    lanes,
    latency,
    models,
    pipeline,
    scaling,
    soak,
)

SUBCOMMANDS = (pipeline, soak, control_plane, latency, lanes, capacity, device, models, scaling)


def add_commands(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for command in SUBCOMMANDS:
        command.add_command(bench_sub)

"""Command group: `img2img chaos`: fault-injection scenarios on the local stack, with real
processes killed, stopped and restarted, and the exactly-once audit after each."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.common import say
from img2img.config.settings import Settings


def cmd_chaos(args: argparse.Namespace, settings: Settings) -> int:
    from infra.chaos.scenarios import SCENARIOS, run_scenario

    if args.scenario not in SCENARIOS:
        known = ", ".join(sorted(SCENARIOS))
        print(f"unknown scenario {args.scenario!r} (known: {known})", file=sys.stderr)
        return 2
    result = run_scenario(args.scenario, settings, images=args.images, say=say)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    ok = result["lost"] == 0 and result["duplicated"] == 0
    return 0 if ok else 1


def add_commands(sub: Any) -> None:
    chaos = sub.add_parser("chaos", help="fault-injection scenarios on the local stack")
    chaos.add_argument("--scenario", required=True)
    chaos.add_argument("--images", type=int, default=8)
    chaos.add_argument("--json", action="store_true")
    chaos.set_defaults(func=cmd_chaos)

"""Command group: `img2img local up | down | status | env | supervise`."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from cli.common import say
from img2img.config.settings import Settings


def cmd_local(args: argparse.Namespace, settings: Settings) -> int:
    from infra.local.stack import LocalStack, describe

    if args.workers is not None:
        settings.local.workers = args.workers
    if args.database is not None:
        settings.local.database = args.database
    if args.ha:
        settings.local.ha = True
    if args.topology is not None:
        settings.topology = args.topology
    if args.action == "supervise":
        return cmd_supervise(settings)
    stack = LocalStack(settings)
    if args.action == "up":
        stack.up(say)
        say(f"Prefect UI: http://{settings.local.host}:{settings.local.prefect_port}")
        say(f"state, logs and PIDs: {stack.state}")
    elif args.action == "down":
        stack.down(say)
    elif args.action == "env":
        # For running flows or the CLI by hand against the local stack: eval "$(img2img local env)"
        env = stack.child_env()
        for key in sorted(env):
            if key.startswith(("IMG2IMG_", "AWS_")) or key == "PREFECT_API_URL":
                print(f"export {key}={shlex.quote(env[key])}")
    else:
        print(describe(stack.status()))
    return 0


def add_commands(sub: Any) -> None:
    local = sub.add_parser("local", help="the embedded local stack")
    local.add_argument("action", choices=["up", "down", "status", "env", "supervise"])
    local.add_argument("--workers", type=int, default=None, help="pipeline workers to start")
    local.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default=None,
        help="the Prefect server's database (default: IMG2IMG_LOCAL__DATABASE, else sqlite)",
    )
    local.add_argument(
        "--topology",
        choices=["single", "split"],
        default=None,
        help="single: one pool runs both stages; split: a pool per stage (inf2-generate, "
        "inf2-upscale), each with its own workers and autoscaling (default: "
        "IMG2IMG_TOPOLOGY, else what the running stack uses, else single)",
    )
    local.add_argument(
        "--ha",
        action="store_true",
        help="the Prefect server as a cluster, as on AWS: API replicas behind HAProxy, the "
        "background services apart, PostgreSQL and Redis (default: IMG2IMG_LOCAL__HA, else "
        "what the running stack uses)",
    )
    local.set_defaults(func=cmd_local)


def cmd_supervise(settings: Settings) -> int:
    """The local stack's supervisor process (started by `local up`)."""
    import threading

    from deployments.services.signals import stop_on_signals
    from infra.local.stack import LocalStack, log

    stopped = threading.Event()
    stop_on_signals(stopped.set, log, "supervisor stopping (services are left running)")
    LocalStack(settings).supervise(stopped.is_set)
    return 0

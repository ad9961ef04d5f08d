"""Command group: the long-running services `img2img dispatch | autoscale`."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from img2img.config.settings import Settings


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from prefect.client.orchestration import get_client

    from deployments.services.dispatcher import Dispatcher
    from deployments.services.lane_queues import ensure_lane_queues
    from img2img.aws.clients import clients_from_settings
    from img2img.pipeline.topology import dispatch_target, pools

    if args.max_batch is not None:
        settings.dispatch.max_batch = args.max_batch
    if args.max_wait is not None:
        settings.dispatch.max_wait_s = args.max_wait
    clients = clients_from_settings(settings.aws)
    with get_client(sync_client=True) as client:
        if settings.lanes.enabled:
            roles = pools(settings.topology, settings.autoscaler.pool)
            ensure_lane_queues(client, [r.pool for r in roles], settings.lanes)
        dispatcher = Dispatcher(
            clients.sqs,
            client,
            settings.storage,
            settings.dispatch,
            dispatch_target(settings),
            run_slots=run_slots(settings),
            crash_flag=settings.faults.dispatcher_crash_flag,
            lanes=settings.lanes,
            tenants=settings.tenants,
            s3=clients.s3,
            max_bytes=settings.limits.max_bytes,
        )
        dispatcher.install_signal_handlers()
        stats = dispatcher.run()
    logging.getLogger("img2img.dispatcher").info("stopped: %s", stats)
    return 0


def run_slots(settings: Settings) -> int:
    """The flow runs the pool holds at once at its largest: max hosts × slots per host ×
    runs per slot."""
    return (
        settings.scaling.max_hosts * settings.scaling.slots_per_host * settings.worker.runs_per_slot
    )


def cmd_autoscale(args: argparse.Namespace, settings: Settings) -> int:
    from prefect.client.orchestration import get_client

    from deployments.services.autoscalers import build_autoscalers

    with get_client(sync_client=True) as client:
        scaler = build_autoscalers(settings, client)
        if args.once:
            for pool, decision in zip((s.pool for s in scaler.scalers), scaler.step(), strict=True):
                print(
                    json.dumps(
                        {
                            "pool": pool,
                            "desired": decision.desired,
                            "reason": decision.reason,
                            "demand": decision.demand,
                        }
                    )
                )
            return 0
        scaler.install_signal_handlers()
        scaler.run()
    return 0


def add_commands(sub: Any) -> None:
    dispatch = sub.add_parser("dispatch", help="run the S3-event dispatcher (long-running)")
    dispatch.add_argument(
        "--max-batch", type=int, default=None, help="most images per run (under a backlog)"
    )
    dispatch.add_argument("--max-wait", type=float, default=None, help="batching window, s")
    dispatch.set_defaults(func=cmd_dispatch)

    autoscale = sub.add_parser("autoscale", help="run the autoscaler (long-running)")
    autoscale.add_argument("--once", action="store_true", help="one decision, then exit")
    autoscale.set_defaults(func=cmd_autoscale)

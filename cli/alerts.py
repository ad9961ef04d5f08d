"""Command group: `img2img alerts apply | render | listen`, the alerts as code."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cli.common import say
from img2img.config.settings import Settings


def _block(args: argparse.Namespace, settings: Settings) -> str:
    block = args.block or settings.monitor.alert_block
    if not block:
        raise SystemExit(
            "name the notification block: --block <block-type-slug>/<name> "
            "(or IMG2IMG_MONITOR__ALERT_BLOCK), e.g. slack-webhook/ops"
        )
    return str(block)


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    from prefect.client.orchestration import get_client

    from deployments.services.alerts import apply, block_document_id, pipeline_definitions
    from img2img.pipeline.topology import pools

    with get_client(sync_client=True) as client:
        block_id = block_document_id(client, _block(args, settings))
        for line in apply(
            client,
            pipeline_definitions(pools(settings.topology, settings.autoscaler.pool), block_id),
        ):
            say(line)
    return 0


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    import yaml
    from prefect.client.orchestration import get_client

    from deployments.services.alerts import block_document_id, pipeline_definitions
    from img2img.pipeline.topology import pools

    with get_client(sync_client=True) as client:
        block_id = block_document_id(client, _block(args, settings))
    text = yaml.safe_dump(
        {
            "automations": pipeline_definitions(
                pools(settings.topology, settings.autoscaler.pool), block_id
            )
        },
        sort_keys=False,
    )
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        say(f"wrote {args.out}: prefect automation create --from-file {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_listen(args: argparse.Namespace, settings: Settings) -> int:
    from infra.local.webhook_listener import serve

    server = serve(settings.local.host, args.port, sys.stdout)
    say(f"listening for alerts on http://{settings.local.host}:{server.server_port}/alerts")
    try:
        deadline = None if args.for_s is None else time.monotonic() + args.for_s
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def add_commands(sub: Any) -> None:
    alerts = sub.add_parser("alerts", help="the alerts (Prefect automations) as code")
    verbs = alerts.add_subparsers(dest="verb", required=True)
    apply = verbs.add_parser("apply", help="create or update the automations")
    apply.add_argument("--block", default=None, help="<block-type-slug>/<name>")
    apply.set_defaults(func=cmd_apply)
    render = verbs.add_parser("render", help="write them for prefect automation create")
    render.add_argument("--block", default=None, help="<block-type-slug>/<name>")
    render.add_argument("--out", default=None, help="file (default: stdout)")
    render.set_defaults(func=cmd_render)
    listen = verbs.add_parser("listen", help="print the local stack's alerts as they arrive")
    listen.add_argument("--port", type=int, default=9465)
    listen.add_argument("--for", dest="for_s", type=float, default=None, help="stop after, s")
    listen.set_defaults(func=cmd_listen)

"""Command group: `img2img recover | reconcile | dlq`: recovery, reconciling and dead letters."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from img2img.config.settings import Settings


def _local_clients(settings: Settings) -> Any:
    from img2img.aws.clients import clients_from_settings

    return clients_from_settings(settings.aws)


def cmd_recover(args: argparse.Namespace, settings: Settings) -> int:
    from prefect.client.orchestration import get_client

    from deployments.services.reconciler import IntakeWatch, held_older_than_s, reconcile
    from deployments.services.recovery import RecoveryService, RunRecovery
    from img2img.delivery.announce import Announcer
    from img2img.pipeline.topology import pools

    clients = _local_clients(settings)
    policy = settings.recovery
    announcer = Announcer.for_clients(clients, settings)
    with get_client(sync_client=True) as client:
        every = [
            RunRecovery(client, clients.s3, settings, role.pool, announcer)
            for role in pools(settings.topology, settings.autoscaler.pool)
        ]
        if args.once:
            for runs in every:
                print(json.dumps({"pool": runs.pool, **runs.step().__dict__}))
            return 0

        ingest = clients.sqs.get_queue_url(QueueName=settings.storage.ingest_queue)
        watch = IntakeWatch(clients.sqs, ingest["QueueUrl"])

        def periodic_reconcile() -> None:
            now = time.time()
            watch.look(now)
            older = held_older_than_s(
                now, watch.clear_at, policy.reconcile_older_than_s, policy.reconcile_hold_max_s
            )
            report = reconcile(
                clients.s3,
                client,
                settings,
                older_than_s=older,
                newer_than_s=policy.lookback_s,
                resubmit=True,
            )
            if report.missing:
                print(json.dumps(report.as_dict()), file=sys.stderr, flush=True)

        service = RecoveryService(every, periodic_reconcile)
        service.install_signal_handlers()
        service.run()
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from prefect.client.orchestration import get_client

    from deployments.services.reconciler import reconcile

    clients = _local_clients(settings)
    with get_client(sync_client=True) as client:
        report = reconcile(
            clients.s3,
            client,
            settings,
            prefix=args.prefix,
            older_than_s=args.older_than,
            resubmit=args.resubmit,
        )
    out = report.as_dict()
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['uploads']} uploads under {out['prefix'] or '(all)'} in "
            f"{', '.join(out['buckets'])}: {out['with_outcome']} with an outcome, "
            f"{out['live']} with a live run, {out['missing']} missing"
        )
        for uri in out["missing_keys"]:
            print(f"  missing: {uri}")
        if out["resubmitted_runs"]:
            print(f"  resubmitted as {len(out['resubmitted_runs'])} flow run(s)")
        elif out["missing"]:
            print("  (run again with --resubmit to create their runs)")
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from deployments.services import dlq

    sqs = _local_clients(settings).sqs
    if args.action == "show":
        letters = dlq.show(sqs, settings.storage, limit=args.limit)
        if args.json:
            for letter in letters:
                print(json.dumps(letter.__dict__))
        else:
            print(f"{len(letters)} message(s) in {settings.storage.dead_letter_queue}")
            for letter in letters:
                print(f"- {letter.message_id}: {letter.reason}")
                print(f"    body: {letter.body[:300]}")
        return 0
    result = dlq.replay(sqs, settings.storage, dry_run=args.dry_run)
    print(json.dumps(result))
    return 0


def add_commands(sub: Any) -> None:
    recover = sub.add_parser(
        "recover", help="recover crashed and orphaned runs, reconcile uploads (long-running)"
    )
    recover.add_argument("--once", action="store_true", help="one pass, then exit")
    recover.set_defaults(func=cmd_recover)

    rec = sub.add_parser("reconcile", help="uploads with no outcome and no live run")
    rec.add_argument("--prefix", default="", help="only keys starting with this")
    rec.add_argument(
        "--older-than", type=float, default=0.0, help="only uploads older than this, in seconds"
    )
    rec.add_argument("--resubmit", action="store_true", help="create their runs again")
    rec.add_argument("--json", action="store_true")
    rec.set_defaults(func=cmd_reconcile)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: show, replay")
    dlq.add_argument("action", choices=["show", "replay"])
    dlq.add_argument("--dry-run", action="store_true", help="replay: only count")
    dlq.add_argument("--limit", type=int, default=100, help="show: most messages")
    dlq.add_argument("--json", action="store_true")
    dlq.set_defaults(func=cmd_dlq)

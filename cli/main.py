"""`img2img`: the command line. Each command group lives in its own module."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cli import alerts, bench, chaos, compile, demo, local, recovery, services, top
from img2img.config.settings import load_settings

GROUPS = (local, services, recovery, chaos, demo, compile, bench, top, alerts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="img2img",
        description="The img2img pipeline: local stack, services, recovery, demo, compile, "
        "benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Transport noise (a line per HTTP request) only when asked for: IMG2IMG_LOG_TRANSPORT=1.
    if not os.environ.get("IMG2IMG_LOG_TRANSPORT"):
        for noisy in ("httpx", "httpcore", "botocore", "urllib3", "werkzeug"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "demo" and args.images < 1:
        print(f"--images must be at least 1, got {args.images}", file=sys.stderr)
        return 2
    settings = load_settings()
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())

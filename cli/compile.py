"""Command group: `img2img compile`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import say
from img2img.compiled.request import add_compile_arguments
from img2img.settings import Settings


def cmd_compile(args: argparse.Namespace, settings: Settings) -> int:
    from img2img.aws import clients_from_settings
    from img2img.compiled.compile import compile_stage
    from img2img.compiled.request import request_from_args
    from img2img.errors import Img2ImgError

    needs_s3 = any(v.startswith("s3://") for v in (args.model, args.out))
    s3 = clients_from_settings(settings.aws).s3 if needs_s3 else None
    request = request_from_args(args)
    try:
        manifest = compile_stage(request, s3, progress=say)
    except Img2ImgError as exc:
        print(f"img2img compile: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(manifest.to_json().replace("\n", " "))
    return 0


def add_commands(sub: Any) -> None:
    comp = sub.add_parser("compile", help="compile a stage to static-shape artifacts")
    add_compile_arguments(comp)
    comp.add_argument("--json", action="store_true", help="print the manifest")
    comp.set_defaults(func=cmd_compile)

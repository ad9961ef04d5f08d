"""Command group: `img2img compile`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.common import say
from img2img.config.settings import Settings
from img2img.models.compiled.request import add_compile_arguments


def cmd_compile(args: argparse.Namespace, settings: Settings) -> int:
    from img2img.aws.clients import clients_from_settings
    from img2img.errors import Img2ImgError
    from img2img.models.compiled.compile import compile_sizes
    from img2img.models.compiled.request import batches_from_args, request_from_args

    needs_s3 = any(v.startswith("s3://") for v in (args.model, args.out))
    s3 = clients_from_settings(settings.aws).s3 if needs_s3 else None
    try:
        request = request_from_args(args)
        manifests = compile_sizes(request, batches_from_args(args), s3, progress=say)
    except Img2ImgError as exc:
        print(f"img2img compile: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for manifest in manifests:
            print(manifest.to_json().replace("\n", " "))
    return 0


def cmd_prefetch(args: argparse.Namespace, settings: Settings) -> int:
    """Fetch the stages' compiled artifacts into the model cache (verified), as a host does
    before its worker starts; a warm-pool instance does it once, before it is stopped.
    Only the stages this host's slots load (`worker.stages`: one on a split topology's
    pool, both by default)."""
    import json

    from img2img.aws.clients import clients_from_settings
    from img2img.models.compiled.cache import fetch_artifacts
    from img2img.models.compiled.sizes import artifact_locations

    s3 = clients_from_settings(settings.aws).s3
    stages = settings.stages
    wanted = settings.worker.stages or ["generate", "upscale"]
    sources = {
        kind: uri
        for kind, uri in (
            ("generate", stages.generate_artifacts),
            ("upscale", stages.upscale_artifacts),
        )
        if kind in wanted
    }
    if not any(sources.values()):
        say("no compiled artifacts configured (IMG2IMG_STAGES__*_ARTIFACTS): nothing to fetch")
        return 0
    for stage, source in sources.items():
        if not source:
            continue
        # Several batch sizes: one artifact each.
        for _size, uri in artifact_locations(source, s3, stages.compiled_batches):
            got = fetch_artifacts(uri, stages.model_cache_dir, s3)
            line = {
                "stage": stage,
                "source": uri,
                "folder": str(got.folder),
                "downloaded": got.downloaded,
                "fetch_s": round(got.seconds, 1),
                "mb": round(got.bytes / 1e6, 1),
            }
            print(json.dumps(line), flush=True)
    return 0


def add_commands(sub: Any) -> None:
    comp = sub.add_parser("compile", help="compile a stage to static-shape artifacts")
    add_compile_arguments(comp)
    comp.add_argument("--json", action="store_true", help="print the manifest")
    comp.set_defaults(func=cmd_compile)
    fetch = sub.add_parser(
        "prefetch", help="fetch the stages' compiled artifacts into the model cache"
    )
    fetch.set_defaults(func=cmd_prefetch)

"""Command: `img2img top`, a live terminal view of the fleet for the control host.

It reads the autoscaler's Prometheus endpoint (the same figures as the `img2img-fleet`
artifact), so it costs the Prefect API nothing however many people run it.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

from img2img.config.settings import Settings
from img2img.observe.scrape import GAUGES, Scraped, parse


def fetch(url: str, timeout_s: float = 5.0) -> Scraped:
    """The endpoint's figures; only an http(s) URL is opened (not file: or another scheme
    urllib would follow)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"the metrics URL must be http or https, but is {url!r}")
    # checked above (bandit B310)
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # nosec B310
        return parse(response.read().decode("utf-8"))


def render(scraped: Scraped, url: str) -> Any:
    from rich.console import Group
    from rich.table import Table

    figures = Table(title=f"img2img fleet ({url})", title_justify="left")
    figures.add_column("figure")
    # One column per work pool (two on a split topology: stage 1's and stage 2's).
    pools = scraped.pool_gauges or {"": scraped.gauges}
    for pool in pools:
        figures.add_column(f"pool {pool}" if pool else "value", justify="right")
    for name, label in GAUGES.items():
        if any(name in gauges for gauges in pools.values()):
            cells = [
                _figure_text(name, gauges[name]) if name in gauges else "–"
                for gauges in pools.values()
            ]
            figures.add_row(label, *cells)
    done = scraped.images
    handed = f", {done['handed_off']:.0f} handed to stage 2" if done.get("handed_off") else ""
    figures.add_row(
        "images since start",
        f"{done.get('completed', 0):.0f} ok, {done.get('failed', 0):.0f} failed{handed}",
        *[""] * (len(pools) - 1),
    )
    stages = Table(title="stages (mean per image since start)", title_justify="left")
    stages.add_column("stage")
    stages.add_column("mean, ms", justify="right")
    stages.add_column("failed", justify="right")
    for stage in sorted(set(scraped.stage_mean_s) | set(scraped.failures)):
        mean = scraped.stage_mean_s.get(stage)
        stages.add_row(
            stage,
            f"{1000 * mean:.0f}" if mean is not None else "–",
            f"{scraped.failures.get(stage, 0):.0f}",
        )
    tables = [figures, stages]
    for title, shares in (("lanes", scraped.lanes), ("busiest tenants", scraped.tenants)):
        if shares:
            tables.append(_share_table(title, shares))
    return Group(*tables)


def _share_table(title: str, shares: dict[str, dict[str, float]]) -> Any:
    """Lanes or tenants over the fleet window, the host cost attributed by device time."""
    from rich.table import Table

    table = Table(title=f"{title} (fleet window)", title_justify="left")
    table.add_column(title.split()[-1].rstrip("s"))
    columns = [
        ("images/min", "images_per_minute", "{:.1f}"),
        ("p95 s", "end_to_end_p95_seconds", "{:.1f}"),
        ("device s", "device_seconds", "{:.1f}"),
        ("host cost $", "cost_usd", "{:.4f}"),
        ("per image $", "cost_per_image_usd", "{:.6f}"),
    ]
    for label, _, _ in columns:
        table.add_column(label, justify="right")
    busiest = sorted(shares.items(), key=lambda kv: -kv[1].get("images_per_minute", 0.0))
    for name, figures in busiest if "tenant" in title else shares.items():
        table.add_row(
            name,
            *(fmt.format(figures[key]) if key in figures else "–" for _, key, fmt in columns),
        )
    return table


def _figure_text(name: str, value: float) -> str:
    if "cost" in name:
        return f"{value:.6f}"
    if "duty" in name:
        return f"{100 * value:.0f}%"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.live import Live

    url = args.url or settings.local.metrics_url
    console = Console()
    try:
        scraped = fetch(url)
    except OSError as exc:
        print(
            f"cannot read {url}: {exc}. Is the autoscaler running with "
            "IMG2IMG_MONITOR__METRICS_PORT set (the local stack serves it)?",
            file=sys.stderr,
        )
        return 1
    if args.once:
        console.print(render(scraped, url))
        return 0
    with Live(render(scraped, url), console=console, refresh_per_second=1) as live:
        try:
            while True:
                time.sleep(args.interval)
                try:
                    live.update(render(fetch(url), url))
                except OSError as exc:
                    live.update(f"cannot read {url}: {exc} (retrying)")
        except KeyboardInterrupt:
            return 0


def add_commands(sub: Any) -> None:
    top = sub.add_parser("top", help="live terminal view of the fleet (reads /metrics)")
    top.add_argument("--url", default=None, help="metrics URL (default: the local stack's)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one view and exit")
    top.set_defaults(func=cmd_top)

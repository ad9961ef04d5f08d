"""The autoscaler as a Prefect flow: one run keeps the pools sized for `duration_s` seconds.

The recommended way to run the autoscaler is the long-running `img2img autoscale` service
(docs/architecture/scaling.md). This flow is the same loop under Prefect's supervision, for
teams that want it as a deployment: schedule it hourly with a concurrency limit of one and
each run scales for the hour, its decisions in the run's logs and the `img2img-autoscaler`
artifact.

    python -m deployments.services.autoscale_flow --duration 300
"""

from __future__ import annotations

import argparse

from prefect import flow, get_run_logger


@flow(name="img2img-autoscaler", log_prints=False)
def autoscale(duration_s: float = 3600.0) -> int:
    """Scale the pipeline's pools for `duration_s` seconds; returns the hosts it leaves."""
    from prefect.client.orchestration import get_client

    from deployments.services.autoscalers import build_autoscalers
    from img2img.config.settings import load_settings

    with get_client(sync_client=True) as client:
        scalers = build_autoscalers(load_settings(), client)
        scalers.run(stop_after_s=duration_s)
    size = 0
    for scaler in scalers.scalers:
        held: int = scaler.target.current()
        get_run_logger().info(
            "left pool %s at %d host(s) after %.0f s", scaler.pool, held, duration_s
        )
        size += held
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the autoscaler for a while.")
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds")
    autoscale(duration_s=parser.parse_args().duration)


if __name__ == "__main__":
    main()

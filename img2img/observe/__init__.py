"""What is shown of a run and of the fleet: stage timings, the per-run report, the waterfall,
the charts and the Prometheus scrape parser."""

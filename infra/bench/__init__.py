"""The benchmarks and their simulations, each an `img2img bench` sub-command: `pipeline` (the
whole local path), `models` (each stage on each backend), `device` (device batches),
`control-plane` (the orchestration alone), `scaling` (request traces through the scaling
policy and its peers), `capacity` (what the Prefect side needs) and `soak` (every process's
memory over time); and `make mutation`'s score. Development only: nothing in production
imports them."""

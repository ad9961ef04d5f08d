"""Everything that is not the running product: the AWS templates (`aws/`, CloudFormation),
the embedded local stack for development (`local/`), the benchmarks (`bench/`) and the
fault-injection scenarios (`chaos/`). Nothing under `deployments/`, `flows/`, `tasks/` or
`img2img/` imports it (the layer contract in `pyproject.toml`)."""

"""What runs where the pipeline is deployed: the warm worker of each Inf2 host (`worker/`) and
the control host's long-running services (`services/`). The deployments themselves are
declared in `prefect.yaml`."""

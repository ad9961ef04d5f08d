"""What a long-lived slot process knows of itself: progress and the hang rule, cooperative
cancel, its resident memory and when it is recycled. Pure or process-local; no S3, no Prefect."""

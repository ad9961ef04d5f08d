"""The control host's long-running services: the S3-event dispatcher, the autoscaler (and its
scale targets, fleet view and /metrics), recovery, the reconciler, the dead-letter queue
tool and the alerts."""

"""What goes out: each upload's one outcome (result or failure record), its completion message,
the reconciler's S3 side, the recovery policy for dead runs and the exactly-once audit.
Never imports models."""

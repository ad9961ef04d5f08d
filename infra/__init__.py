"""Infrastructure: the local stack's AWS resources (mirroring the AWS templates)."""

"""AWS calls: boto3 clients from settings or a prefect-aws block, the pipeline's S3 calls on the
error tree, and folders of files under an S3 prefix. Nothing here knows a stage or a model."""

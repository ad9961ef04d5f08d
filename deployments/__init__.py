"""What `prefect deploy` and the services need: the S3-event dispatcher, job templates."""

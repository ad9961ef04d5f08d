"""The embedded local stack for development: Prefect server (SQLite or PostgreSQL), moto,
resources mirroring the AWS templates, the services as supervised processes, and the demo.
Nothing the control host runs on AWS imports it."""

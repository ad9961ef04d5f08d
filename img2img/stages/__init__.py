"""The two inference stages. Each takes a loaded pipeline, so it never knows the backend."""

"""The two inference stages. Each takes a loaded pipeline, so it never knows the backend.
What a stage's model is (`StageKind`) is named once, in `img2img.config.stages`."""

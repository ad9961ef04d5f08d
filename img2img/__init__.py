"""img2img: S3-event-driven image generation and upscaling on Prefect and Inferentia2.

The core package holds plain Python: settings, AWS clients, S3 event parsing, image
checks, model loading and the two inference stages. Prefect decorators live in `tasks/`
and `flows/` only.
"""

__version__ = "0.1.0"

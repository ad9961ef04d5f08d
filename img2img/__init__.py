"""img2img: S3-event-driven image generation and upscaling on Prefect and Inferentia2.

The core: plain Python, no Prefect (Prefect decorators live in `tasks/` and `flows/`), in
packages by concern: `config` (settings), `aws` (clients, S3 calls), `intake` (what comes
in), `pipeline` (a batch's way through the stages), `models` (loading the stage models),
`delivery` (what goes out, exactly once), `slots` (a warm slot's self-knowledge), `scaling`
(the pools' policy), `observe` (timings, reports, charts) and `dev` (development models).
"""

__version__ = "0.1.0"

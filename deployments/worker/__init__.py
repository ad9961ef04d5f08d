"""What runs on each Inf2 host: the `img2img-warm` Prefect worker, its slot pool, the slot
process and what they say to each other, and the job template."""

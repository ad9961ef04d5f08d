"""The benchmarks and their simulations, in one place: `img2img bench pipeline` (the whole
local path), `bench models` (each stage on each backend) and `bench scaling` (request
traces through the scaling policy). Dev-only: nothing in production imports them."""

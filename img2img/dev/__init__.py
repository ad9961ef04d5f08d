"""Development models and inputs: tiny random-weight pipelines of the real classes (the
embedded default), real architectures with random weights, the simulated device and the
demo's sample images. Production code reaches them only through the registries (the
backend registry's `simulated`, the eager backend's default model, `compile --model
random:...`); import-linter holds that line."""

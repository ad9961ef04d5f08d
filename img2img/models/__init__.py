"""The stage models: the backend registry (eager, simulated, torchscript, neuron), the models
of this process loaded once, the eager diffusers path, folders built once per host, and the
compiled path (`compiled/`: export with `img2img compile`, runtime with the loader)."""

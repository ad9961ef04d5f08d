"""Compiled stage models: trace each stage's parts to static-shape artifacts and run them.

parts.py      the traced wrappers and the example inputs that fix their shapes
manifest.py   what travels with the artifacts and is checked at load
backends.py   torchscript (torch.jit.trace) and neuron (torch_neuronx.trace)
runtime.py    the compiled parts reassembled into a diffusers pipeline
compile.py    `img2img compile`: trace, save, checksum, upload
cache.py      artifacts fetched from S3 once per host, verified
loader.py     the one entry point the model cache calls
"""

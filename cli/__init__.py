"""The `img2img` command line: a thin shell over the services, one module per command
group. It sits on top of every other layer (see docs/architecture/README.md, Layers)."""

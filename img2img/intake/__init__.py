"""What comes in: S3 event notifications, upload keys, micro-batches, per-image parameters,
decoded images and the layers that keep an upload from being taken twice. Never imports
models or delivery."""

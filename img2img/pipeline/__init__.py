"""One batch's way through the pipeline: image jobs, the steps around the two inference
stages, device batches, the hand-off of the split topology, where each stage runs, and the
stages themselves."""

"""The training runtime: input pipeline, device and precision, strategies, resuming, the log."""

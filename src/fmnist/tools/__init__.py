"""The `fmnist` commands around the pipeline: predict, registry, lineage, remotes, reports."""

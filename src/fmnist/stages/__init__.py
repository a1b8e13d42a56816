"""The pipeline's stages, one module each, run by `dvc.yaml` as `python -m fmnist.stages NAME`."""

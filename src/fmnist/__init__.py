"""Fashion-MNIST CNN classifier: a DVC pipeline from raw IDX files to a packaged model."""

__version__ = "0.1.0"

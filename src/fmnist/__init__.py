"""Fashion-MNIST CNN classifier: a DVC pipeline from raw IDX files to a packaged model.

Importing any module of this package changes nothing in the process; the entry points
(`fmnist.launch`) apply the process settings.
"""

__version__ = "0.1.0"

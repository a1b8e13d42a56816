"""The exceptions the pipeline raises for problems a user can fix.

Stage entry points catch `PipelineError`, print its message and exit non-zero, so a user
sees one clear sentence instead of a traceback from deep inside TensorFlow.
"""

import functools
import sys


class PipelineError(Exception):
    """A problem with the user's input, params or environment; the message says how to fix it."""


class ParamsError(PipelineError):
    """`params.yaml` has an unknown, missing or mistyped key, or a value out of range."""


class DataError(PipelineError):
    """A data file is missing, truncated, corrupt or inconsistent."""


class ImageError(PipelineError):
    """An image given to `predict` cannot be used as a model input."""


def report_errors(main):
    """Wrap a stage's `main()`: a `PipelineError` becomes one `error:` line and exit code 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapper

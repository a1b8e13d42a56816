"""The exceptions the pipeline raises for problems a user can fix.

Stage entry points catch `PipelineError`, print its message and exit non-zero, so a user
sees one clear sentence instead of a traceback from deep inside TensorFlow. An entry point
may set a hint (`set_hint`) that ends every such line: how to get back to where the user was.
"""

import functools
import sys

# Appended to every error line of this process (see `set_hint`); "" for none.
_hint = ""


class PipelineError(Exception):
    """A problem with the user's input, params or environment; the message says how to fix it."""


class ParamsError(PipelineError):
    """`params.yaml` has an unknown, missing or mistyped key, or a value out of range."""


class DataError(PipelineError):
    """A data file is missing, truncated, corrupt or inconsistent."""


class ImageError(PipelineError):
    """An image given to `predict` cannot be used as a model input."""


def set_hint(text: str) -> None:
    """Make every error line of this process end with `text` (an entry point's business:
    the stages' entry point says how to restore what DVC removed before the stage ran)."""
    global _hint
    _hint = text


def with_hint(message: str) -> str:
    """`message`, then the hint an entry point set, if any."""
    return f"{message.rstrip('.')}. {_hint}" if _hint else message


def report_errors(main):
    """Wrap a stage's `main()`: a `PipelineError` becomes one `error:` line and exit code 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as exc:
            print(f"error: {with_hint(str(exc))}", file=sys.stderr)
            return 1

    return wrapper

"""The `fmnist` commands around the pipeline: predict, registry, lineage, remotes, reports."""

from __future__ import annotations

import sys
from pathlib import Path

from fmnist import atomic


def write_or_print(text: str, out: Path | None) -> None:
    """A rendered file (a spec, a request body) to `out`, atomically, or to stdout without one."""
    if out:
        atomic.write_text(out, text)
    else:
        sys.stdout.write(text)

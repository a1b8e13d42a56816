"""Markdown tables, for the model card and the pull-request report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tabulate import tabulate


def _cell(value: Any) -> str:
    # A bare `|` would end the cell early and shift every column after it.
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; each cell as `str()` gives it (no number reformatting, no
    padding, so a row reads `| a | b |`), with `|` escaped."""
    return tabulate(
        [[_cell(c) for c in row] for row in rows],
        headers=[_cell(h) for h in header],
        tablefmt="github",
        stralign=None,
        numalign=None,
        disable_numparse=True,
    )

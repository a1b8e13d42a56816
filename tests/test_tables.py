"""The one Markdown table helper (model card, PR report)."""

from __future__ import annotations

from fmnist.tables import markdown_table


def test_markdown_table_escapes_pipes_and_keeps_cells_as_given():
    text = markdown_table(["a|b", "n"], [["x | y", 0.10], ["`p|q`", None]])
    lines = text.splitlines()
    assert lines[0] == "| a\\|b | n |"
    assert set(lines[1]) == {"|", "-"} and lines[1].count("|") == 3
    assert lines[2:] == ["| x \\| y | 0.1 |", "| `p\\|q` | None |"]

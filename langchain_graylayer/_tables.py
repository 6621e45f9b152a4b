"""Tables for people: aligned plain text for the terminal, Markdown for reports."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["markdown_table", "table"]


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell, a rule under the header.

    Example:
        >>> print(table([("vip", "1%")], ["layer", "ratio"]))
        layer  ratio
        -----  -----
        vip    1%
    """
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(
    rows: Sequence[Sequence[object]], header: Sequence[str], align: str | None = None
) -> str:
    """A Markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: left).

    Example:
        >>> print(markdown_table([("vip", 3)], ["layer", "users"], align="lr"))
        | layer | users |
        |---|---:|
        | vip | 3 |
    """
    rules = {"l": "---", "r": "---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(rules[a] for a in (align or "l" * len(header))) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

"""Small helpers that turn core results into the materialization metadata a user reads."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg

MAX_TABLE_ROWS = 50


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, empty: str = "none"
) -> dg.MetadataValue:
    """A markdown table of the first ``MAX_TABLE_ROWS`` rows (the UI renders it in the asset page)."""
    rows = list(rows)
    if not rows:
        return dg.MetadataValue.md(f"_{empty}_")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(_cell(row.get(col, "")) for col in columns) + " |" for row in rows[:MAX_TABLE_ROWS]
    ]
    if len(rows) > MAX_TABLE_ROWS:
        lines.append(f"\n_{len(rows) - MAX_TABLE_ROWS} more rows not shown_")
    return dg.MetadataValue.md("\n".join(lines))


def source_label(keys: Sequence[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{len(keys)} sources ({keys[0]} .. {keys[-1]})"

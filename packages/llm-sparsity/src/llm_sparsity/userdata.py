"""Reading a user's data files (plain text, JSONL, CSV) with clear errors for missing columns."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research_systems_core.errors import UserError

__all__ = ["column", "read_records", "read_texts", "require_columns"]

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL (one object per line), JSON (a list of objects) or CSV/TSV file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(
            f"data file {path}: expected one of {', '.join(TABLE_SUFFIXES)}, got {suffix or 'no suffix'!r}"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise UserError(f"data file {path} is empty")
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"data file {path}, line {i}: not valid JSON ({exc.msg})") from None
    elif suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"data file {path}: not valid JSON ({exc.msg})") from None
        if not isinstance(rows, list):
            raise UserError(f"data file {path}: expected a JSON list of objects")
    else:
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise UserError(f"data file {path}: row {bad + 1} is not an object with named columns")
    if not rows:
        raise UserError(f"data file {path} holds no rows")
    return rows


def require_columns(
    rows: Sequence[dict[str, Any]], names: Sequence[str], path: str | Path, option: str = ""
) -> None:
    """Every row must hold every column in ``names``; the error names the column and those present."""
    present = list(rows[0]) if rows else []
    for name in names:
        for i, row in enumerate(rows):
            if name not in row:
                hint = f" (set {option})" if option else ""
                raise UserError(
                    f"data file {path}: column {name!r} is missing{' in row ' + str(i + 1) if i else ''}{hint}; "
                    f"columns present: {', '.join(map(str, present)) or 'none'}"
                )


def column(rows: Sequence[dict[str, Any]], name: str, path: str | Path, option: str = "") -> list[Any]:
    """The values of one column (checked to exist in every row)."""
    require_columns(rows, [name], path, option)
    return [row[name] for row in rows]


def read_texts(path: str | Path, text_column: str = "text") -> list[str]:
    """Texts from a plain-text file (paragraphs separated by blank lines) or a column of a table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} does not exist")
    if path.suffix.lower() in TABLE_SUFFIXES:
        rows = read_records(path)
        return [str(v) for v in column(rows, text_column, path, "--text-column") if str(v).strip()]
    text = path.read_text(encoding="utf-8", errors="replace")
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    if not parts:
        raise UserError(f"text file {path} is empty")
    return parts

"""SQL lives in sql/ as .sql files; this reads them."""
from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_ROOT = Path(__file__).resolve().parent.parent / "sql"


def sql_exists(relative_path: str) -> bool:
    return (SQL_ROOT / relative_path).is_file()


@cache
def sql_text(relative_path: str) -> str:
    """The text of sql/<relative_path>, e.g. sql_text('postgres/hrdv_schema.sql')."""
    path = SQL_ROOT / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()

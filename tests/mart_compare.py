"""Mart rows compared as float sums allow: the keys exactly, the figures to 1e-9 relative.

The marts add float8 measures; PostgreSQL adds them in whatever order its plan reads the rows, so
two correct computations of one window can differ in the last bits, and rounding both to a fixed
number of decimals still differs when a value sits on a rounding boundary (9.375219178 against
9.375219177, seen twice in the end-to-end test). So figures are compared with a relative tolerance.
"""
from __future__ import annotations

import math
from typing import Any

import psycopg

FIGURES = ("value", "numerator", "denominator", "rows")
IGNORED = ("published_at",)


def rows_by_key(conn: psycopg.Connection, table: str, where: str, params: Any) -> dict[tuple, tuple]:
    """A mart's rows (or its provisional table's): key columns -> figures."""
    cur = conn.execute(f"SELECT * FROM {table} WHERE {where}", params)
    names = [c.name for c in cur.description]
    figures = [names.index(n) for n in FIGURES]
    keys = [i for i, n in enumerate(names) if i not in figures and n not in IGNORED]
    return {tuple(row[i] for i in keys): tuple(row[i] for i in figures) for row in cur.fetchall()}


def same_figure(a: float | None, b: float | None) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def differences(got: dict[tuple, tuple], expected: dict[tuple, tuple], limit: int = 3) -> list[str]:
    """What differs, a few of each kind: rows missing, rows unexpected, rows with other figures."""
    missing = sorted((k for k in expected if k not in got), key=repr)
    extra = sorted((k for k in got if k not in expected), key=repr)
    wrong = sorted((k for k in expected if k in got and not all(map(same_figure, got[k], expected[k]))), key=repr)
    found = []
    if missing:
        found.append(f"{len(missing)} row(s) missing, e.g. {missing[:limit]}")
    if extra:
        found.append(f"{len(extra)} row(s) unexpected, e.g. {extra[:limit]}")
    if wrong:
        found.append(f"{len(wrong)} row(s) with other figures {FIGURES}, e.g. "
                     f"{[(k, got[k], expected[k]) for k in wrong[:limit]]}")
    return found

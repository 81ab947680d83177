"""Publishing the KPI marts of a set of windows: every family and grain, in the caller's
transaction, checked by blocking rules before it commits.

`publish(conn, catalog, starts)` recomputes the windows (all families), the hours and days that
hold them, records the windows in mart.kpi_publications and evaluates the rules. The caller
commits only if every rule passed: a reader sees every mart of a window or none of them, and a
failed rule leaves the previous published state as it was. Pure of Dagster: the assets, the
benches and the tests call it alike.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from hrdv import catalog_sql as cs
from hrdv import provisional
from hrdv.catalog import TOTAL, Catalog, Family

ADDITIVE = ("count", "sum")  # kinds whose details add up to the total and windows to the hour
TOLERANCE = 1e-6
# Per publishing transaction: JIT compiles each of its few dozen statements anew, which costs more
# than it saves (measured: 1.1 s of compilation in a backfill's backlog statement alone), and a
# backfill's grouping sets sort or hash millions of (row, window) pairs that spill at the default 4 MB.
SESSION = {"jit": "off", "work_mem": "'128MB'"}


@dataclass(frozen=True)
class Rule:
    name: str
    description: str


RULES = (
    Rule("shares_within_0_1", "Every share (unit: share) lies in 0..1."),
    Rule("no_negative_values", "No value, numerator or denominator is negative (durations, counts, sums)."),
    Rule("details_sum_to_totals", "Counts and sums cut by any dimension set add up to the total of the same period."),
    Rule("dimension_keys_exist", "Every dimension value with a reference table is a key of that staging table."),
    Rule("rollups_match_windows", "Hourly and daily counts and sums equal the sum of their windows."),
    Rule("backlog_balances", "A window's backlog equals the previous window's plus what opened minus what "
                             "closed (reopenings and deletes included), per family total."),
)


@dataclass
class RuleResult:
    rule: Rule
    offending: int
    sample: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.offending == 0

    def describe(self) -> str:
        rows = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in self.sample[:5])
        return f"{self.rule.name}: {self.offending} offending row(s): {rows}"


@dataclass
class Publication:
    windows: list[datetime]
    figures: dict[str, dict[datetime, tuple[int, int]]]  # table -> period -> rows, series (indicator x set)
    timings: dict[str, float]
    results: list[RuleResult]

    @property
    def rows(self) -> dict[str, int]:
        """Rows of the run's periods, per table."""
        return {table: sum(rows for rows, _ in periods.values()) for table, periods in self.figures.items()}

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def failures(self) -> list[str]:
        return [result.describe() for result in self.results if not result.passed]


def _periods(grain: str, starts: Sequence[datetime], window) -> dict[str, list[datetime]]:
    if grain == "window":
        return {"starts": list(starts), "ends": [s + window for s in starts]}
    periods = cs.periods_of(grain, list(starts))
    return {"starts": [a for a, _ in periods], "ends": [b for _, b in periods]}


def _execute(cur: psycopg.Cursor, sql: str, params: dict) -> None:
    for statement in cs.statements(sql):
        cur.execute(statement, params)


def publish(conn: psycopg.Connection, catalog: Catalog, starts: Sequence[datetime], window,
            run_id: str | None = None) -> Publication:
    """Recompute and check the marts of the windows `starts` (each `window` long) inside the
    connection's open transaction; the caller commits if Publication.passed, else rolls back."""
    timings: dict[str, float] = {}
    periods = {grain: _periods(grain, starts, window) for grain in cs.GRAINS}
    with conn.cursor() as cur:
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        for setting, value in SESSION.items():
            cur.execute(f"SET LOCAL {setting} = {value}")
        began = time.perf_counter()
        refresh_bases(cur, catalog)
        timings["bases_s"] = round(time.perf_counter() - began, 3)
        for family in catalog.families.values():
            began = time.perf_counter()
            _execute(cur, cs.compute_sql(catalog, family, "window"), periods["window"])
            timings[f"{family.name}_window_s"] = round(time.perf_counter() - began, 3)
        cur.execute(
            "INSERT INTO mart.kpi_publications (window_start, window_end, run_id) "
            "SELECT s, e, %(run)s FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS t (s, e) "
            "ON CONFLICT (window_start) DO UPDATE SET published_at = now(), run_id = EXCLUDED.run_id",
            {**periods["window"], "run": run_id})
        for family in catalog.families.values():
            for grain in ("hour", "day"):
                began = time.perf_counter()
                _execute(cur, cs.roll_up_sql(catalog, family, grain), periods[grain])
                rows_kinds = cs.rows_indicators(family)
                if rows_kinds:
                    _execute(cur, cs.compute_sql(catalog, family, grain, rows_kinds), periods[grain])
                timings[f"{family.name}_{grain}_s"] = round(time.perf_counter() - began, 3)
        figures = _figures(cur, catalog, periods)
        began = time.perf_counter()
        results = check(cur, catalog, periods, window)
        timings["rules_s"] = round(time.perf_counter() - began, 3)
        provisional.replace_with_final(cur, catalog, starts)
        # When readers see it: just before the caller's commit, not the transaction's start.
        cur.execute("UPDATE mart.kpi_publications SET published_at = clock_timestamp() "
                    "WHERE window_start = ANY (%(starts)s::timestamptz[])", periods["window"])
    return Publication(list(starts), figures, timings, results)


def refresh_bases(cur: psycopg.Cursor, catalog: Catalog, force: bool = False) -> list[str]:
    """Recount the populations that are empty (a new store: the customers' snapshot may still be
    on its way) or older than their refresh interval (or all, with force)."""
    refreshed = []
    for name, base in catalog.bases.items():
        stale = force or cur.execute(
            f"SELECT coalesce(max(refreshed_at) < now() - make_interval(mins => %s) OR sum(population) = 0, true) "
            f"FROM mart.kpi_base_{name}", (base.refresh_minutes,)).fetchone()[0]
        if stale:
            _execute(cur, cs.base_refresh_sql(catalog, name), {})
            refreshed.append(name)
    return refreshed


def _figures(cur: psycopg.Cursor, catalog: Catalog, periods: dict) -> dict[str, dict[datetime, tuple[int, int]]]:
    """Rows and series (indicator x dimension set) of each period the run wrote, per table."""
    figures = {}
    for family in catalog.families.values():
        for grain in cs.GRAINS:
            name = cs.table(family, grain)
            figures[name] = {row[0]: (row[1], row[2]) for row in cur.execute(
                f"SELECT period_start, count(*), count(DISTINCT (indicator, dimension_set)) FROM {name} "
                "WHERE period_start = ANY (%(starts)s::timestamptz[]) GROUP BY 1", periods[grain])}
    return figures


# --- the rules -------------------------------------------------------------------------------------
def check(cur: psycopg.Cursor, catalog: Catalog, periods: dict, window) -> list[RuleResult]:
    by_name = {rule.name: rule for rule in RULES}
    # rule -> (grain whose periods the query binds, query) of every family
    queries: dict[str, list[tuple[str, str]]] = {rule.name: [] for rule in RULES if rule.name != "backlog_balances"}
    for family in catalog.families.values():
        for grain in cs.GRAINS:
            queries["shares_within_0_1"] += [(grain, q) for q in _shares(family, grain)]
            queries["no_negative_values"] += [(grain, q) for q in _negatives(family, grain)]
            queries["details_sum_to_totals"] += [(grain, q) for q in _details(family, grain)]
            queries["dimension_keys_exist"] += [(grain, q) for q in _references(catalog, family, grain)]
        for grain in ("hour", "day"):
            queries["rollups_match_windows"] += [(grain, q) for q in _rollups(family, grain)]
    results = []
    for name, grain_queries in queries.items():
        began = time.perf_counter()
        offending, sample = 0, []
        for grain, sql in grain_queries:
            found = _run(cur, sql, periods[grain])
            offending += len(found)
            sample += found[: 20 - len(sample)]
        results.append(RuleResult(by_name[name], offending, sample, round(time.perf_counter() - began, 3)))
    began = time.perf_counter()
    results.append(_balances(cur, catalog, periods, window))
    results[-1].seconds = round(time.perf_counter() - began, 3)
    return results


def _run(cur: psycopg.Cursor, sql: str, params: dict) -> list[dict]:
    cur.execute(sql, params)
    names = [c.name for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _in_run(alias: str = "") -> str:
    """The rows of the run's periods (bound as %(starts)s)."""
    return f"{alias}period_start = ANY (%(starts)s::timestamptz[])"


def _ids(indicators) -> str:
    return "ARRAY[" + ", ".join(f"'{i.id}'" for i in indicators) + "]::text[]"


def _shares(family: Family, grain: str) -> list[str]:
    shares = [i for i in family.indicators if i.unit == "share"]
    if not shares:
        return []
    return [f"SELECT '{cs.table(family, grain)}' AS mart, period_start, indicator, dimension_set, value "
            f"FROM {cs.table(family, grain)} WHERE {_in_run()} AND indicator = ANY ({_ids(shares)}) "
            "AND (value < 0 OR value > 1)"]


def _negatives(family: Family, grain: str) -> list[str]:
    return [f"SELECT '{cs.table(family, grain)}' AS mart, period_start, indicator, dimension_set, value, "
            f"numerator, denominator FROM {cs.table(family, grain)} WHERE {_in_run()} "
            "AND (value < 0 OR numerator < 0 OR denominator < 0)"]


def _details(family: Family, grain: str) -> list[str]:
    additive = [i for i in family.indicators
                if (i.kind in ADDITIVE or (i.kind == "snapshot" and i.aggregate == "count"))
                and any(s.name == TOTAL for s in family.sets_of(i))]
    if not additive:
        return []
    mart = cs.table(family, grain)
    return [f"""SELECT '{mart}' AS mart, d.period_start, d.indicator, d.dimension_set, d.total_of_details,
       t.value AS total
FROM (SELECT period_start, indicator, dimension_set, sum(value) AS total_of_details
      FROM {mart} WHERE {_in_run()} AND indicator = ANY ({_ids(additive)}) AND dimension_set <> '{TOTAL}'
      GROUP BY 1, 2, 3) AS d
LEFT JOIN {mart} AS t
  ON t.period_start = d.period_start AND t.indicator = d.indicator AND t.dimension_set = '{TOTAL}'
WHERE abs(d.total_of_details - coalesce(t.value, 0)) > {TOLERANCE} * greatest(1, abs(coalesce(t.value, 0)))"""]


def _references(catalog: Catalog, family: Family, grain: str) -> list[str]:
    out = []
    mart = cs.table(family, grain)
    for name in family.used_dimensions:
        reference = catalog.dimensions[name].reference
        if reference is None:
            continue
        key = cs.entities.entity(reference).key
        out.append(f"SELECT DISTINCT '{mart}' AS mart, '{name}' AS dimension, m.{name} AS value "
                   f"FROM {mart} AS m WHERE {_in_run('m.')} AND m.{name} IS NOT NULL AND NOT EXISTS "
                   f"(SELECT 1 FROM staging.{reference} AS r WHERE r.{key}::text = m.{name} AND NOT r.is_deleted)")
    return out


def _rollups(family: Family, grain: str) -> list[str]:
    additive = [i for i in family.indicators if i.kind in ADDITIVE]
    if not additive:
        return []
    mart, source = cs.table(family, grain), cs.table(family, "window")
    keys = ["indicator", "dimension_set", *family.used_dimensions]
    # coalesce: a FULL JOIN needs hashable conditions, and NULL is a dimension value here.
    same = " AND ".join(f"coalesce(r.{k}, '\x01') = coalesce(a.{k}, '\x01')" for k in keys)
    listed = ", ".join(f"w.{k}" for k in keys)
    return [f"""SELECT '{mart}' AS mart, coalesce(r.period_start, a.period_start) AS period_start,
       coalesce(r.indicator, a.indicator) AS indicator, coalesce(r.dimension_set, a.dimension_set) AS dimension_set,
       r.value, a.windows
FROM (SELECT * FROM {mart} WHERE {_in_run()} AND indicator = ANY ({_ids(additive)})) AS r
FULL JOIN (
    SELECT p.period_start, {listed}, sum(w.value) AS windows
    FROM unnest(%(starts)s::timestamptz[], %(ends)s::timestamptz[]) AS p (period_start, period_end)
    JOIN {source} AS w ON w.period_start >= p.period_start AND w.period_start < p.period_end
    WHERE w.indicator = ANY ({_ids(additive)})
    GROUP BY p.period_start, {listed}
) AS a ON r.period_start = a.period_start AND {same}
WHERE abs(coalesce(r.value, 0) - coalesce(a.windows, 0)) > {TOLERANCE} * greatest(1, abs(coalesce(r.value, 0)))"""]


def _balances(cur: psycopg.Cursor, catalog: Catalog, periods: dict, window) -> RuleResult:
    """backlog(W) - backlog(W - 1) = inflow(W) - outflow(W) at the total, with W - 1 recomputed now
    when the run does not hold it (its published value may predate a late change that the
    late-change sensor is about to fix)."""
    rule = next(r for r in RULES if r.name == "backlog_balances")
    starts = periods["window"]["starts"]
    in_run = set(starts)
    held = [s - window for s in starts if s - window in in_run]
    missing = [s - window for s in starts if s - window not in in_run]
    previous = {"starts": missing, "ends": [s + window for s in missing]}
    offending, sample = 0, []
    for family in catalog.families.values():
        if not family.spec.balances:
            continue
        by_id = {i.id: i for i in family.indicators}
        backlogs = [by_id[b.backlog] for b in family.spec.balances]
        scratch = f"pg_temp.kpi_previous_{family.name}"
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS kpi_previous_{family.name} "
                    f"(LIKE {cs.table(family, 'window')} INCLUDING DEFAULTS) ON COMMIT DROP")
        cur.execute(f"TRUNCATE {scratch}")
        mart = cs.table(family, "window")
        if missing:
            _execute(cur, cs.compute_sql(catalog, family, "window", backlogs, target=scratch), previous)
        cur.execute(f"INSERT INTO {scratch} SELECT * FROM {mart} WHERE period_start = ANY (%(held)s::timestamptz[]) "
                    f"AND indicator = ANY (%(ids)s::text[]) AND dimension_set = '{TOTAL}'",
                    {"held": held, "ids": [b.id for b in backlogs]})
        for balance in family.spec.balances:
            sql = f"""
WITH w AS (SELECT unnest(%(starts)s::timestamptz[]) AS period_start),
totals AS (
    SELECT w.period_start, m.indicator, m.value
    FROM w JOIN {mart} AS m ON m.period_start = w.period_start AND m.dimension_set = '{TOTAL}'
)
SELECT '{family.name}' AS family, w.period_start,
       coalesce((SELECT value FROM {scratch} AS s WHERE s.period_start = w.period_start - %(window)s
                 AND s.indicator = '{balance.backlog}' AND s.dimension_set = '{TOTAL}'), 0) AS previous_backlog,
       {_flows(balance.inflow)} AS inflow, {_flows(balance.outflow)} AS outflow,
       coalesce((SELECT value FROM totals AS t WHERE t.period_start = w.period_start
                 AND t.indicator = '{balance.backlog}'), 0) AS backlog
FROM w"""
            cur.execute(sql, {"starts": starts, "window": window})
            names = [c.name for c in cur.description]
            for row in cur.fetchall():
                record = dict(zip(names, row))
                expected = record["previous_backlog"] + record["inflow"] - record["outflow"]
                if abs(record["backlog"] - expected) > TOLERANCE:
                    offending += 1
                    if len(sample) < 20:
                        sample.append({**record, "expected": expected})
    return RuleResult(rule, offending, sample)


def _flows(indicator_ids: list[str]) -> str:
    return " + ".join(f"coalesce((SELECT value FROM totals AS t WHERE t.period_start = w.period_start "
                      f"AND t.indicator = '{i}'), 0)" for i in indicator_ids)

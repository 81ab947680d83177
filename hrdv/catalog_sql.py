"""The marts' SQL, produced from the KPI catalog (hrdv.catalog) by the templates in
sql/postgres/catalog/. Nothing here knows an indicator by name: adding one is a catalog entry.

Per family (interactions, work_orders, ...) and grain (window, hour, day) one long table
mart.kpi_<family>_<grain>: a row per period x indicator x dimension set x dimension values, with the
value and the parts it came from (numerator, denominator, rows). Window rows are computed from
staging, one grouped scan per event (GROUPING SETS over every dimension set the event's indicators
are cut by). Hours and days are recomputed for the periods a run touched: additive kinds from the
windows' parts, snapshots from the period's last published window, percentiles and distinct counts
from the period's rows (a day's p90 is the p90 of the day's rows).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import jinja2

from hrdv import entities, entity_sql
from hrdv.catalog import TOTAL, Catalog, DimensionSet, Event, Family, Indicator
from hrdv.settings import REPO_ROOT

TEMPLATES = REPO_ROOT / "sql" / "postgres" / "catalog"
GRAINS = ("window", "hour", "day")
REPORTING_TZ = ZoneInfo("Europe/Moscow")
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_ALIAS = re.compile(r"\b([a-z_][a-z0-9_]*)\.")


def table(family: Family | str, grain: str) -> str:
    name = family if isinstance(family, str) else family.name
    return f"mart.kpi_{name}_{grain}"


@dataclass(frozen=True)
class Column:
    """A per-row expression of one indicator inside an event's scan (r.<name> in the aggregates)."""
    name: str
    sql: str


@dataclass(frozen=True)
class Aggregate:
    """One indicator's figures over a group of an event's rows."""
    indicator: Indicator
    sets: tuple[str, ...]
    rows: str
    numerator: str
    denominator: str
    value: str
    per: int | None = None  # rate: the value is numerator * per / the base


@dataclass(frozen=True)
class EventScan:
    name: str
    condition: str  # which rows of the entity the event may put into any of the periods (indexed)
    periods: str  # the FROM item (p) giving the periods a row (f) falls into
    aliases: tuple[str, ...]  # the joins it reads
    dimensions: tuple[tuple[str, str], ...]  # (name, SQL)
    sets: tuple[DimensionSet, ...]
    columns: tuple[Column, ...]
    aggregates: tuple[Aggregate, ...]
    uses_base: bool


def grouping_case(dimensions: list[str], sets: list[DimensionSet], prefix: str = "r.dim_") -> str:
    """CASE over GROUPING(...) naming each row's dimension set."""
    if not dimensions:
        return f"'{TOTAL}'"
    args = ", ".join(f"{prefix}{d}" for d in dimensions)
    whens = []
    for dimension_set in sets:
        mask = sum(1 << (len(dimensions) - 1 - i) for i, d in enumerate(dimensions)
                   if d not in dimension_set.dimensions)
        whens.append(f"WHEN {mask} THEN '{dimension_set.name}'")
    return f"CASE GROUPING({args}) {' '.join(whens)} END"


def _event_condition(event: Event, catalog: Catalog, start: str, end: str) -> str:
    """Which rows of an event fall between `start` and `end` (SQL): a period's bounds, or the
    first start and last end of all periods (the index range every period lies in)."""
    if event.shape == "time":
        branches = []
        for i, column in enumerate(event.times):
            earlier = "".join(f"f.{c} IS NULL AND " for c in event.times[:i])
            branches.append(f"({earlier}f.{column} >= {start} AND f.{column} < {end})")
        return " OR ".join(branches)
    if event.shape == "open":  # the span's GiST index finds them however long the history
        return f"{open_span(event)} && tstzrange({start}, {end}, '[]')"
    spec = event.overlap
    hours = catalog.parameters["max_state_hours"].value
    return (f"f.{spec.from_} < {end} AND f.{spec.from_} >= {start} - interval '{int(hours)} hours' "
            f"AND (f.{spec.until} IS NULL OR f.{spec.until} > {start})")


def _event_time(event: Event) -> str:
    """A time event's moment: its column, or the first non-null of its list."""
    times = [f"f.{t}" for t in event.times]
    return times[0] if len(times) == 1 else f"coalesce({', '.join(times)})"


def _event_periods(event: Event, catalog: Catalog) -> str:
    """The FROM item p: the periods row f falls into, found in the sorted bounds b (a binary
    search for a moment, an index range for a span), never by comparing a row with every period."""
    pick = "SELECT b.starts[i] AS period_start, b.ends[i] AS period_end FROM"
    if event.shape == "time":
        moment = _event_time(event)
        return (f"LATERAL ({pick} (SELECT width_bucket({moment}, b.starts) AS i) AS w\n"
                f"            WHERE i > 0 AND {moment} < b.ends[i]) AS p")
    if event.shape == "open":  # from < end <= the first of its ends
        return (f"LATERAL ({pick} generate_series(width_bucket(f.{event.open.from_}, b.ends) + 1,\n"
                f"            coalesce(width_bucket({_first_end(event)}, b.ends), cardinality(b.ends))) AS i) AS p")
    spec = event.overlap  # the periods from the first ending after it starts to the last starting before it ends
    hours = int(catalog.parameters["max_state_hours"].value)
    return (f"LATERAL ({pick} generate_series(width_bucket(f.{spec.from_}, b.ends) + 1,\n"
            f"            coalesce(width_bucket(f.{spec.until}, b.starts), cardinality(b.starts))) AS i\n"
            f"            WHERE (f.{spec.until} IS NULL OR b.starts[i] < f.{spec.until})\n"
            f"              AND f.{spec.from_} >= b.starts[i] - interval '{hours} hours') AS p")


def open_span(event: Event, alias: str = "f.") -> str:
    """The time an `open` event's row is open, (from, first of its ends], as a range: open at t
    when it contains t (an end before its start makes it empty, never an error)."""
    start, end = f"{alias}{event.open.from_}", _first_end(event, alias)
    return f"tstzrange({start}, CASE WHEN {end} IS NULL THEN NULL ELSE greatest({start}, {end}) END, '(]')"


def _first_end(event: Event, alias: str = "f.") -> str:
    """When an `open` event's row stopped being open: the first of its ends (NULL while open)."""
    ends = [f"{alias}{c}" for c in event.open.until]
    return ends[0] if len(ends) == 1 else f"least({', '.join(ends)})"  # least() skips NULLs


def _join_sql(alias: str, join, as_of: str) -> str:
    referenced = entities.entity(join.entity)
    if join.as_of:
        # The version valid then, or the first one for a moment before the history begins: two
        # index probes (the second only when the first finds nothing), no sort.
        history, key = f"staging.{referenced.name}_history", f"h.{referenced.key} = {join.key} AND NOT h.is_deleted"
        return (f"LEFT JOIN LATERAL (\n"
                f"        (SELECT h.* FROM {history} AS h WHERE {key} AND h.valid_from <= {as_of}\n"
                f"         ORDER BY h.valid_from DESC LIMIT 1)\n"
                f"        UNION ALL\n"
                f"        (SELECT h.* FROM {history} AS h WHERE {key} ORDER BY h.valid_from LIMIT 1)\n"
                f"        LIMIT 1\n    ) AS {alias} ON true")
    return (f"LEFT JOIN staging.{referenced.name} AS {alias}\n"
            f"        ON {alias}.{referenced.key} = {join.key} AND NOT {alias}.is_deleted")


def _needed_joins(family: Family, texts: list[str]) -> list[str]:
    """The family's joins the SQL texts reference, with the joins those depend on, in file order."""
    joins = family.spec.joins
    needed: set[str] = set()
    pending = {a for text in texts for a in _ALIAS.findall(text) if a in joins}
    while pending:
        alias = pending.pop()
        if alias not in needed:
            needed.add(alias)
            pending |= {a for a in _ALIAS.findall(joins[alias].key) if a in joins}
    return [alias for alias in joins if alias in needed]


def _clipped_seconds(event: Event) -> str:
    if event.shape != "overlap":
        return "NULL"
    spec = event.overlap
    return (f"extract(epoch FROM least(coalesce(f.{spec.until}, p.period_end), p.period_end) "
            f"- greatest(f.{spec.from_}, p.period_start))")


def _aggregate(catalog: Catalog, family: Family, indicator: Indicator, n: int,
               clipped: str) -> tuple[list[Column], Aggregate]:
    render = lambda text: catalog.render(text, clipped_s=clipped)  # noqa: E731
    f, m, c = f"r._f{n}", f"r._m{n}", f"r._c{n}"
    columns = [Column(f"_f{n}", f"coalesce(({render(indicator.filter) or 'true'}), false)")]
    if indicator.measure:
        columns.append(Column(f"_m{n}", f"({render(indicator.measure)})::float8"))
    if indicator.condition:
        columns.append(Column(f"_c{n}", f"coalesce(({render(indicator.condition)}), false)"))
    if indicator.kind == "deadline":
        columns.append(Column(f"_c{n}", f"({render(indicator.done)}) <= ({render(indicator.due)})"))
    rows = f"count(*) FILTER (WHERE {f})"
    null = "NULL::float8"
    kind, aggregate = indicator.kind, (indicator.aggregate or "")
    if kind == "count" or (kind == "snapshot" and aggregate == "count"):
        numerator, denominator, value = f"{rows}::float8", null, f"{rows}::float8"
    elif kind == "sum":
        numerator = f"coalesce(sum({m}) FILTER (WHERE {f}), 0)"
        denominator, value = null, numerator
    elif kind == "average" or (kind == "snapshot" and aggregate == "average"):
        numerator = f"sum({m}) FILTER (WHERE {f})"
        denominator = f"count({m}) FILTER (WHERE {f})::float8"
        value = f"{numerator} / nullif({denominator}, 0)"
    elif kind == "ratio" or (kind == "snapshot" and aggregate == "ratio"):
        weight = render(indicator.weight) or "1"
        numerator_weight = render(indicator.numerator_weight) or weight
        columns.append(Column(f"_w{n}", f"({weight})::float8"))
        columns.append(Column(f"_nw{n}", f"({numerator_weight})::float8"))
        numerator = f"coalesce(sum(r._nw{n}) FILTER (WHERE {f} AND {c}), 0)"
        denominator = f"sum(r._w{n}) FILTER (WHERE {f})"
        value = f"{numerator} / nullif({denominator}, 0)"
    elif kind == "deadline":
        columns.append(Column(f"_due{n}", f"({render(indicator.due)}) IS NOT NULL"))
        numerator = f"count(*) FILTER (WHERE {f} AND r._due{n} AND {c})::float8"
        denominator = f"count(*) FILTER (WHERE {f} AND r._due{n})::float8"
        value = f"{numerator} / nullif({denominator}, 0)"
    elif kind == "percentile":
        numerator = null
        denominator = f"count({m}) FILTER (WHERE {f})::float8"
        value = f"percentile_cont({indicator.quantile}) WITHIN GROUP (ORDER BY {m}) FILTER (WHERE {f})"
    elif kind == "distinct":
        numerator = f"count(DISTINCT {m}) FILTER (WHERE {f})::float8"
        denominator, value = null, numerator
    elif kind == "per_distinct":
        numerator = f"{rows}::float8"
        denominator = f"count(DISTINCT {m}) FILTER (WHERE {f})::float8"
        value = f"{numerator} / nullif({denominator}, 0)"
    elif kind == "rate":
        numerator, denominator, value = f"{rows}::float8", null, null
    else:  # pragma: no cover - the catalog's schema admits no other kind
        raise ValueError(f"{indicator.id}: kind {kind} has no SQL")
    sets = tuple(s.name for s in family.sets_of(indicator))
    return columns, Aggregate(indicator, sets, rows, numerator, denominator, value, indicator.per)


def event_scans(catalog: Catalog, family: Family, indicators: list[Indicator] | None = None) -> list[EventScan]:
    chosen = indicators if indicators is not None else family.indicators
    scans = []
    for event_name, event in family.spec.events.items():
        mine = [i for i in chosen if i.event == event_name]
        if not mine:
            continue
        clipped = _clipped_seconds(event)
        columns: list[Column] = []
        aggregates: list[Aggregate] = []
        for indicator in mine:
            n = family.indicators.index(indicator)
            extra, aggregate = _aggregate(catalog, family, indicator, n, clipped)
            columns += extra
            aggregates.append(aggregate)
        sets: dict[DimensionSet, None] = {}
        for indicator in mine:
            for dimension_set in family.sets_of(indicator):
                sets.setdefault(dimension_set, None)
        used = sorted({d for s in sets for d in s.dimensions})
        dimensions = tuple((d, family.spec.dimensions[d]) for d in used)
        texts = [sql for _, sql in dimensions] + [c.sql for c in columns]
        scans.append(EventScan(
            name=event_name, condition=_event_condition(event, catalog, "b.first_start", "b.last_end"),
            periods=_event_periods(event, catalog), aliases=tuple(_needed_joins(family, texts)),
            dimensions=dimensions,
            sets=tuple(sets), columns=tuple(columns), aggregates=tuple(aggregates),
            uses_base=any(i.kind == "rate" for i in mine)))
    return scans


def base_sets(catalog: Catalog, name: str) -> list[DimensionSet]:
    """Every dimension set an indicator rated against base `name` is cut by, in any family."""
    sets: dict[DimensionSet, None] = {}
    for family, indicator in catalog.indicators:
        if indicator.kind == "rate" and indicator.base == name:
            for dimension_set in family.sets_of(indicator):
                sets.setdefault(dimension_set, None)
    return list(sets)


def _bases(catalog: Catalog, family: Family, indicators: list[Indicator]) -> list[dict]:
    names = sorted({i.base for i in indicators if i.kind == "rate"})
    return [{"name": name, "dimensions": list(catalog.bases[name].dimensions)} for name in names]


def base_refresh_sql(catalog: Catalog, name: str) -> str:
    base = catalog.bases[name]
    dimensions = list(base.dimensions)
    sets = base_sets(catalog, name)
    return _ENV.get_template("base_refresh.sql.j2").render(
        name=name, base=base, entity=entities.entity(base.entity), dimensions=dimensions,
        expressions=list(base.dimensions.items()), sets=sets, grouping=grouping_case(dimensions, sets))


# --- statements ---------------------------------------------------------------------------------------
STATEMENT_BREAK = "-- next statement\n"


def statements(sql: str) -> list[str]:
    """A generated script's statements, to execute one by one with parameters."""
    return [part for part in sql.split(STATEMENT_BREAK) if part.strip()]


def compute_sql(catalog: Catalog, family: Family, grain: str, indicators: list[Indicator] | None = None,
                target: str | None = None, relations: dict[str, str] | None = None) -> str:
    """Replace the rows of `indicators` (default: all) of mart.kpi_<family>_<grain> (or of
    `target`, a table like it) for the periods %(starts)s / %(ends)s (timestamptz arrays),
    computed from staging (`relations` reads other relations instead of some staging tables,
    wherever the SQL names them, the catalog's conditions included: the provisional overlays): one statement reading each row the periods need once, with its joins
    (the as-of lookups are most of a window's cost), then every event's figures from those rows."""
    chosen = indicators if indicators is not None else family.indicators
    scans = event_scans(catalog, family, chosen)
    aliases = [a for a in family.spec.joins if any(a in scan.aliases for scan in scans)]
    as_of = f"f.{family.spec.as_of}" if family.spec.as_of else "NULL"
    sql = _ENV.get_template("compute.sql.j2").render(
        family=family, grain=grain, target=target or table(family, grain), scans=scans,
        source=f"staging.{family.entity.name}", aliases=aliases,
        joins=[_join_sql(a, family.spec.joins[a], as_of) for a in aliases],
        all_dimensions=family.used_dimensions, subset=indicators is not None,
        indicator_ids=[i.id for i in chosen], bases=_bases(catalog, family, chosen),
        grouping_case=grouping_case)
    for relation, instead in (relations or {}).items():  # staging.x, never staging.x_history
        sql = re.sub(rf"\b{re.escape(relation)}\b(?!\.)", instead, sql)
    return sql


def roll_up_sql(catalog: Catalog, family: Family, grain: str) -> str:
    """Recompute mart.kpi_<family>_<grain> (hour or day) for the periods %(starts)s/%(ends)s:
    additive kinds from the parts of the grain below (a day from its hours, which must be current:
    roll the hours up first), snapshots from the last published window. Percentiles and distinct
    counts come from compute_sql over the period's rows instead."""
    parts = [i for i in family.indicators if i.roll_up == "parts"]
    last = [i for i in family.indicators if i.roll_up == "last"]
    return _ENV.get_template("roll_up.sql.j2").render(
        family=family, target=table(family, grain), source=table(family, "window"),
        parts_source=table(family, "hour" if grain == "day" else "window"),
        dimensions=family.used_dimensions, parts=parts, last=last)


def rows_indicators(family: Family) -> list[Indicator]:
    return [i for i in family.indicators if i.roll_up == "rows"]


def ddl(catalog: Catalog) -> str:
    """Every mart table, index, comparison view and staging index the catalog needs (idempotent)."""
    parts = [_ENV.get_template("publications.sql.j2").render()]
    for name, base in catalog.bases.items():
        parts.append(_ENV.get_template("base_table.sql.j2").render(name=name, base=base,
                                                                     dimensions=list(base.dimensions)))
    for family in catalog.families.values():
        parts.append(_ENV.get_template("mart_tables.sql.j2").render(
            family=family, grains=GRAINS, dimensions=family.used_dimensions, table=table,
            catalog=catalog))
        parts.append(_staging_indexes(family, "staging"))
    parts.append(provisional_ddl(catalog))
    for grain in ("window", "day"):
        parts.append(_ENV.get_template("bottlenecks.sql.j2").render(
            grain=grain, bottlenecks=catalog.bottlenecks.bottlenecks, usual=catalog.bottlenecks.usual,
            table=table, additive=_zero_when_absent(catalog)))
    parts.append(reports_ddl(catalog))
    return "\n".join(parts)


# --- the dashboards' views --------------------------------------------------------------------------
REPORT_GRAINS = ("window", "day")


def report_view(family: Family | str, grain: str) -> str:
    """What the dashboards read of a family: mart.report_<family>_<window|day|today>."""
    return f"mart.report_{family if isinstance(family, str) else family.name}_{grain}"


@dataclass(frozen=True)
class ReportDimension:
    name: str
    code: str   # SQL of the value's key (a branch row's region: the branch's region)
    label: str  # SQL of its Russian name


@dataclass(frozen=True)
class ReportJoin:
    alias: str
    table: str
    key: str
    on: str


def _territory_depth(catalog: Catalog, name: str) -> int:
    within = catalog.dimensions[name].within
    return 0 if within is None else 1 + _territory_depth(catalog, within)


def report_dimensions(catalog: Catalog, family: Family) -> tuple[list[ReportDimension], list[ReportJoin]]:
    """Each dimension of the family's marts and the coarser territories they lie within, with the
    SQL of its key and Russian name, and the reference joins that give them (finest first, since
    a coarser key is read from the finer reference: a branch's region_code)."""
    used = set(family.used_dimensions)
    scope = catalog.within(used)
    order = sorted(scope, key=lambda n: (-_territory_depth(catalog, n), n))
    codes: dict[str, str] = {}
    dims: list[ReportDimension] = []
    joins: list[ReportJoin] = []
    for name in order:
        spec = catalog.dimensions[name]
        finer = [f"d_{child}.{catalog.dimensions[child].within_key}" for child in order
                 if catalog.dimensions[child].within == name and child in codes]
        parts = ([f"m.{name}"] if name in used else []) + finer
        codes[name] = parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
        if spec.reference:
            joins.append(ReportJoin(f"d_{name}", spec.reference, entities.entity(spec.reference).key, codes[name]))
            label = f"coalesce(d_{name}.name, {codes[name]})"
        elif spec.labels:
            cases = " ".join(f"WHEN '{code}' THEN '{text}'" for code, text in spec.labels.items())
            label = f"CASE {codes[name]} {cases} ELSE {codes[name]} END"
        else:
            label = codes[name]
        dims.append(ReportDimension(name, codes[name], label))
    return sorted(dims, key=lambda d: d.name), joins


def reports_ddl(catalog: Catalog) -> str:
    """The views the dashboards read: per family, its window marts (final and provisional) and
    day marts (with the day and week before) with Russian names and Moscow time, and today so far."""
    parts = []
    for family in catalog.families.values():
        dims, joins = report_dimensions(catalog, family)
        codes = {d.name: d.code for d in dims}
        parts.append(_ENV.get_template("reports.sql.j2").render(
            family=family, dims=dims, joins=joins, tz=REPORTING_TZ.key, live=live_view(family),
            sources=[("window", live_view(family)), ("day", f"{table(family, 'day')}_compared")],
            has_region="region" in codes, region_code=codes.get("region", "")))
    keys = {name: entities.entity(spec.reference).key for name, spec in catalog.dimensions.items() if spec.reference}
    parts.append(_ENV.get_template("reports_shared.sql.j2").render(
        dimensions=[(n, s) for n, s in catalog.dimensions.items() if s.reference or s.labels], keys=keys,
        bottlenecks=catalog.bottlenecks.bottlenecks, tz=REPORTING_TZ.key, stages=STAGE_NAMES.items()))
    return "\n".join(parts)


# The pipeline's stages in order, as the engineers' dashboard names them (hrdv.provisional.STAGES).
STAGE_NAMES = {
    "capture": "захват в CRM (Debezium)",
    "kafka": "Kafka",
    "buffer": "буфер ClickHouse",
    "staging": "операционное хранилище (staging)",
    "final": "окончательные витрины",
    "provisional": "предварительные витрины открытого окна",
}


def provisional_table(family: Family | str) -> str:
    """The provisional rows of family's windows not yet published."""
    return f"{table(family, 'window')}_provisional"


def live_view(family: Family | str) -> str:
    """Each window once: final when published, else provisional (column `provisional`)."""
    return f"{table(family, 'window')}_live"


def overlay(family: Family) -> str:
    """The provisional source: staging overlaid with the changes buffered since."""
    return f"provisional.{family.entity.name}_overlay"


def provisional_relations(catalog: Catalog) -> dict[str, str]:
    """Every fact entity's staging table -> its overlay: what a provisional compute reads instead."""
    return {f"staging.{family.entity.name}": overlay(family) for family in catalog.families.values()}


def provisional_ddl(catalog: Catalog) -> str:
    """The open window's objects: provisional.<fact entity>, its overlay, each family's
    provisional table and live view (after the marts: the tables copy the window marts' shape)."""
    parts = [(REPO_ROOT / "sql" / "postgres" / "provisional.sql").read_text()]
    for family in catalog.families.values():
        entity = family.entity
        parts.append(entity_sql.provisional_table_ddl(entity) + ";")
        parts.append(_staging_indexes(family, "provisional"))
        parts.append(_ENV.get_template("provisional.sql.j2").render(
            family=family, entity=entity, key=entity.key, columns=entity_sql.staged_columns(entity),
            dimensions=family.used_dimensions, final=table(family, "window"),
            provisional=provisional_table(family), live=live_view(family)))
    return "\n".join(parts)


def _staging_indexes(family: Family, schema: str) -> str:
    """The indexes the family's compute reads its fact table by, in staging or in its provisional
    copy (whose correlated lookups, e.g. a customer's earlier contacts, need them as much)."""
    return _ENV.get_template("staging_indexes.sql.j2").render(
        family=family, entity=family.entity, events=family.spec.events.values(), open_span=open_span,
        schema=schema, as_of_histories=_as_of_histories(family) if schema == "staging" else [])


def _as_of_histories(family: Family) -> list[entities.Entity]:
    """The entities whose history the family's as-of joins read."""
    names = sorted({join.entity for join in family.spec.joins.values() if join.as_of})
    return [entities.entity(name) for name in names]


def _zero_when_absent(catalog: Catalog) -> set[str]:
    """Bottlenecks whose indicator is a count or a sum: no row means 0, not unknown."""
    out = set()
    for entry in catalog.bottlenecks.bottlenecks:
        _, indicator = catalog.indicator(entry.indicator)
        if indicator.kind in ("count", "sum") or (indicator.kind == "snapshot" and indicator.aggregate == "count"):
            out.add(entry.id)
    return out


# --- periods ------------------------------------------------------------------------------------------
def hour_of(moment: datetime) -> tuple[datetime, datetime]:
    start = moment.astimezone(REPORTING_TZ).replace(minute=0, second=0, microsecond=0)
    return start, start + timedelta(hours=1)


def day_of(moment: datetime) -> tuple[datetime, datetime]:
    local = moment.astimezone(REPORTING_TZ)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)  # Moscow keeps no daylight saving


def periods_of(grain: str, window_starts: list[datetime]) -> list[tuple[datetime, datetime]]:
    """The hours or days holding the windows, each once, in order."""
    of = hour_of if grain == "hour" else day_of
    return sorted({of(start) for start in window_starts})


# --- late changes ---------------------------------------------------------------------------------
_ROW_COLUMN = re.compile(r"\bf\.([a-z_][a-z0-9_]*)")


def _event_inputs(catalog: Catalog, family: Family, event_name: str) -> set[str]:
    """The row's columns an event's figures read: its times, filters, measures, dimensions, join keys."""
    event = family.spec.events[event_name]
    chosen = [i for i in family.indicators if i.event == event_name]
    texts = [catalog.render(getattr(i, name), clipped_s="0") or ""
             for i in chosen for name in ("filter", "measure", "condition", "weight", "numerator_weight",
                                          "done", "due")]
    used = {d for i in chosen for s in family.sets_of(i) for d in s.dimensions}
    texts += [family.spec.dimensions[d] for d in used]
    texts += [family.spec.joins[alias].key for alias in _needed_joins(family, texts)]
    return set(_ROW_COLUMN.findall(" ".join(texts))) | set(event.columns)


def late_windows_sql(catalog: Catalog, entity: entities.Entity) -> str | None:
    """Earlier windows whose catalog figures a batch of the entity's changes alters (None when no
    family reads the entity): for each event time, the windows of its old and new value when the
    row is new, deleted or undeleted, or a column that event's figures read changed. Snapshots
    (open events) are as of their publication and are not listed: a backfill restates them."""
    staged = {c.name for c in entity.staged}
    events: dict[tuple[str, ...], set[str]] = {}
    for family in catalog.families.values():
        if family.entity.name != entity.name:
            continue
        for name, event in family.spec.events.items():
            if event.shape == "open" or not any(i.event == name for i in family.indicators):
                continue
            inputs = _event_inputs(catalog, family, name) & staged
            moments = [tuple(event.times)] if event.shape == "time" else \
                [(event.overlap.from_,), (event.overlap.until,)]
            for moment in moments:
                events.setdefault(moment, set()).update(inputs)
    if not events:
        return None
    return _ENV.get_template("late_windows.sql.j2").render(
        entity=entity, temp=entity_sql.temp_table(entity),
        events=[(times, sorted(columns)) for times, columns in sorted(events.items())])

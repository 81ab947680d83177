"""The KPI marts of the catalog (catalog/*.yaml): one asset per entity family and grain, published
together for a window by one step in one transaction (hrdv.marts.publish), guarded by blocking
rules that are asset checks of mart/kpi_publications.

Two routes publish: the windows' runs (sensor, backfill, UI, GraphQL, CLI) through the multi-asset
publish_kpi_marts, and the late-change sensor's recompute_kpi_marts op for exactly the windows that
changes of any fact entity staged later altered. Either way every window gets its own
materialisation of every mart (its rows and series), and each rule one result per run.
"""

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    TableColumn,
    TableSchema,
    multi_asset,
    op,
)

from hrdv import catalog as kpi_catalog
from hrdv import catalog_sql, marts
from hrdv.catalog import Family
from hrdv_assets.cdc import OWNERS, STAGED
from hrdv_assets.interactions import MART_POOL
from hrdv_assets.windows import (
    PASSING_FAILURES,
    RecomputeConfig,
    keys_to_recompute,
    now_utc,
    refuse,
    requested_keys,
    unstaged_keys,
    window_text,
)
from partitions import WINDOW, reporting_windows, window_of
from resources.postgres import PostgresResource

CATALOG = kpi_catalog.default()
PUBLICATIONS_KEY = AssetKey(["mart", "kpi_publications"])
GRAIN_TEXT = {"window": "reporting window", "hour": "hour", "day": "day (Moscow)"}
# Fact entities whose late changes alter earlier windows of the marts.
FACTS = sorted({family.entity.name for family in CATALOG.families.values()})


def mart_key(family: Family, grain: str) -> AssetKey:
    return AssetKey(["mart", f"kpi_{family.name}_{grain}"])


MART_KEYS = [mart_key(f, g) for f in CATALOG.families.values() for g in catalog_sql.GRAINS]
ALL_KEYS = [*MART_KEYS, PUBLICATIONS_KEY]


def _entities_read(family: Family) -> list[str]:
    names = {family.entity.name, *(j.entity for j in family.spec.joins.values())}
    names |= {CATALOG.bases[i.base].entity for i in family.indicators if i.kind == "rate"}
    return sorted(names)


def _deps(family: Family) -> list[AssetKey]:
    keys = []
    for name in _entities_read(family):
        staged = STAGED[name]
        keys.append(staged.staging_key)
        if any(j.entity == name and j.as_of for j in family.spec.joins.values()):
            keys.append(staged.history_key)
    return keys


def _columns(family: Family) -> TableSchema:
    dims = [TableColumn(d, "text", f"{CATALOG.dimensions[d].names.ru} / {CATALOG.dimensions[d].names.en}")
            for d in family.used_dimensions]
    return TableSchema(columns=[
        TableColumn("period_start", "timestamptz", "start of the period"),
        TableColumn("period_end", "timestamptz", "end of the period (exclusive)"),
        TableColumn("indicator", "text", "catalog id of the indicator"),
        TableColumn("dimension_set", "text", "the dimensions the row is cut by, e.g. channel+region, or total"),
        *dims,
        TableColumn("value", "float", "the indicator's value"),
        TableColumn("numerator", "float", "its numerator (sum, count, ...), what coarser grains add up"),
        TableColumn("denominator", "float", "its denominator, where it has one"),
        TableColumn("rows", "bigint", "event rows behind the value"),
        TableColumn("published_at", "timestamptz", "when the row was computed"),
    ])


def _indicator_table(family: Family) -> str:
    lines = ["| id | название | kind | unit | dimension sets |", "|---|---|---|---|---|"]
    for indicator in family.indicators:
        sets = ", ".join(s.name for s in family.sets_of(indicator))
        lines.append(f"| {indicator.id} | {indicator.names.ru} | {indicator.kind} | {indicator.unit} | {sets} |")
    return "\n".join(lines)


def _spec(family: Family, grain: str) -> AssetSpec:
    series = sum(len(family.sets_of(i)) for i in family.indicators)
    return AssetSpec(
        key=mart_key(family, grain),
        deps=_deps(family),
        partitions_def=reporting_windows,
        group_name=family.entity.name,
        owners=[family.spec.owner, *OWNERS],
        kinds={"postgres"},
        description=(f"{catalog_sql.table(family, grain)}: {family.spec.names.ru} / {family.spec.names.en}, "
                     f"{len(family.indicators)} indicators in {series} series per {GRAIN_TEXT[grain]} "
                     f"(catalog/{family.path.name}). {family.spec.description} "
                     "A window's partition (re)computes that window"
                     + ("" if grain == "window" else f" and the {grain} holding it") + "."),
        metadata={"dagster/column_schema": _columns(family),
                  "dagster/table_name": f"hrdv.{catalog_sql.table(family, grain)}",
                  "indicators": MetadataValue.md(_indicator_table(family)),
                  "series": series, "grain": grain},
    )


# One result per rule and run (not per window): a run over hundreds of windows evaluates each rule
# once over all of them, and its metadata names the windows and the offending rows.
CHECKS = [AssetCheckSpec(rule.name, asset=PUBLICATIONS_KEY, blocking=True, description=rule.description)
          for rule in marts.RULES]


@dataclass(frozen=True)
class Published:
    metadata: dict[AssetKey, dict[str, dict]]  # mart -> window key -> metadata
    checks: list[AssetCheckEvaluation]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def publish_kpi_marts(db: PostgresResource, keys: Sequence[str], run_id: str | None) -> Published:
    """Every KPI mart of the windows `keys`, in one transaction committed only if every rule passes."""
    began = time.monotonic()
    starts = [window_of(key).start for key in keys]
    with db.connect() as conn, conn.transaction():
        publication = marts.publish(conn, CATALOG, starts, WINDOW, run_id)
        if not publication.passed:
            raise psycopg.Rollback()
    now = now_utc()
    run = {"windows_in_run": len(keys), "run_duration_s": round(time.monotonic() - began, 3),
           "published": publication.passed, **{f"timing_{k}": v for k, v in publication.timings.items()}}
    metadata: dict[AssetKey, dict[str, dict]] = {}
    for family in CATALOG.families.values():
        for grain in catalog_sql.GRAINS:
            key_of_mart = mart_key(family, grain)
            metadata[key_of_mart] = {}
            for key in keys:
                period = _period_of(key, grain)
                rows, series = publication.figures[catalog_sql.table(family, grain)].get(period, (0, 0))
                metadata[key_of_mart][key] = {
                    **window_text(window_of(key)), "period_start": period.isoformat(),
                    "dagster/row_count": rows, "series": series,
                    "dagster/table_name": f"hrdv.{catalog_sql.table(family, grain)}"}
    # The run's figures once per window, on the publication log.
    metadata[PUBLICATIONS_KEY] = {key: {**window_text(window_of(key)), **run, "published_after_window_end_s":
                                        round((now - window_of(key).end).total_seconds(), 1)} for key in keys}
    windows = f"{keys[0]} .. {keys[-1]}" if len(keys) > 1 else keys[0]
    checks = [AssetCheckEvaluation(
        asset_key=PUBLICATIONS_KEY, check_name=result.rule.name, blocking=True, passed=result.passed,
        metadata={"windows": windows, "windows_in_run": len(keys), "offending_rows": result.offending,
                  "seconds": result.seconds,
                  **({"sample": MetadataValue.md(_sample(result.sample))} if result.sample else {})})
        for result in publication.results]
    return Published(metadata, checks, publication.failures())


def _sample(rows: list[dict]) -> str:
    if not rows:
        return ""
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(str(row.get(n)) for n in names) + " |" for row in rows[:20]]
    return "\n".join(lines)


def _period_of(key: str, grain: str) -> datetime:
    """The start of the period of `grain` that window `key`'s partition writes."""
    start = window_of(key).start
    return start if grain == "window" else catalog_sql.periods_of(grain, [start])[0][0]


def _fail_if_rejected(context, published: Published) -> None:
    if not published.passed:
        context.log.error("KPI publication rules failed, rolled back, nothing published:\n"
                          + "\n".join(published.failures))
        raise refuse("KPI marts not published, the previous published state stays; failed rules: "
                     + " | ".join(published.failures))


@multi_asset(
    name="publish_kpi_marts",
    specs=[*(_spec(f, g) for f in CATALOG.families.values() for g in catalog_sql.GRAINS),
           AssetSpec(
               key=PUBLICATIONS_KEY, deps=MART_KEYS, partitions_def=reporting_windows,
               group_name="kpi_marts", owners=OWNERS, kinds={"postgres"},
               description=("mart.kpi_publications: the windows whose KPI marts (every family, every "
                            "grain) were published together in one transaction. Its checks are the "
                            "blocking rules evaluated before that transaction commits."),
               metadata={"dagster/table_name": "hrdv.mart.kpi_publications"})],
    check_specs=CHECKS,
    backfill_policy=BackfillPolicy.single_run(),
    # Subsettable only so that the rules' results can be yielded as evaluations; a selection of
    # some of the marts is refused below: a window's marts are published together.
    can_subset=True,
    pool=MART_POOL,
    retry_policy=PASSING_FAILURES,
)
def kpi_marts(context: AssetExecutionContext, hrdv_db: PostgresResource) -> Iterator:
    missing = set(ALL_KEYS) - set(context.selected_asset_keys)
    if missing:
        raise refuse(f"the KPI marts of a window are published together: select all {len(ALL_KEYS)} of them "
                     f"(missing {sorted(k.to_user_string() for k in missing)[:5]}...), or none")
    keys = requested_keys(context)
    unstaged = unstaged_keys(context, keys, STAGED[FACTS[0]].staging_key)
    if unstaged:
        raise refuse(f"staging of {len(unstaged)} window(s) has not run ({unstaged[:5]}...): their KPI "
                     "marts would not be final; materialise staging too")
    published = publish_kpi_marts(hrdv_db, keys, context.run.run_id)
    for asset_key, per_window in published.metadata.items():
        for key, metadata in per_window.items():
            context.add_asset_metadata(metadata, asset_key=asset_key, partition_key=key)
    yield from published.checks
    _fail_if_rejected(context, published)
    for asset_key in published.metadata:
        yield MaterializeResult(asset_key=asset_key)


@op(
    name="recompute_kpi_marts",
    description=("Recomputes every KPI mart (windows and the hours and days holding them) for exactly "
                 "the listed windows, in one transaction, with a materialisation and check results per window."),
    out={},
    pool=MART_POOL,
    retry_policy=PASSING_FAILURES,
)
def recompute_kpi_marts(context: OpExecutionContext, config: RecomputeConfig,
                        hrdv_db: PostgresResource) -> Iterator:
    keys = keys_to_recompute(context, config, STAGED[FACTS[0]].staging_key)
    if not keys:
        return
    published = publish_kpi_marts(hrdv_db, keys, context.run.run_id)
    yield from published.checks
    _fail_if_rejected(context, published)
    for asset_key, per_window in published.metadata.items():
        for key, metadata in per_window.items():
            yield AssetMaterialization(asset_key=asset_key, partition=key, metadata=metadata)


kpi_assets = [kpi_marts]

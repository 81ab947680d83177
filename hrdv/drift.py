"""Drift between staging and the CRM: found by a sample each window, repaired by `hrdv resync`.

Everything that reaches staging has passed the parsing checks, yet a bad version can still get in
(a forged LSN inside the allowed lead, a row written into staging behind the pipeline's back, a
bug). The CRM is the truth, so a sample of staged rows is compared with it:

- judged are only rows whose current CRM version committed before the horizon, the end of the
  newest window staging holds: such a row must be staged exactly as the CRM has it. The commit
  time is the CRM's own (pg_xact_commit_timestamp(xmin), track_commit_timestamp = on; rows
  committed before that was switched on fall back to the entity's updated_at column);
- a judged row drifted if staging lacks it, holds it as deleted, or holds other values;
- rows deleted in the CRM, or changed at or after the horizon, are not judged (their change may
  still be on its way);
- the CRM is read by primary key through the source reader login (HRDV_SOURCE_DSN, SELECT on the
  captured tables only; in production a CRM standby): one indexed query per run, for at most
  2 x HRDV_DRIFT_SAMPLE keys per window.

`resync` repairs chosen keys without bypassing the pipeline: it reads their CRM rows together with
the CRM's current WAL position L, removes from the buffer every version of them beyond L (no real
change can be there: they can only be forged), lowers a staged LSN beyond L to 0, and inserts each
row as a fresh version (op 'r', LSN L, committed now, topic 'hrdv resync') into the buffer. The next
window's staging takes it like any change, and the late-change sensor recomputes the earlier
windows it alters. A row that is being changed at the moment (its xmax in progress) is read again.
"""
from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import click
import psycopg
from psycopg import sql

from hrdv import clickhouse
from hrdv.entities import BY_NAME, entity as entity_named
from hrdv.entity_sql import staged_columns
from hrdv.settings import load

DEFAULT_SAMPLE = 50
PIPELINE_COLUMNS = ("is_deleted", "lsn", "committed_at")  # staging's, not the CRM's
RESYNC_TOPIC = "hrdv resync"
RESYNC_ATTEMPTS = 20


def sample_size() -> int:
    """Keys per window and kind (changed in the window / anywhere in staging): HRDV_DRIFT_SAMPLE."""
    raw = os.environ.get("HRDV_DRIFT_SAMPLE", str(DEFAULT_SAMPLE))
    if not raw.isdigit():
        raise ValueError(f"HRDV_DRIFT_SAMPLE must be a whole number >= 0, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Drifted:
    key: int
    problem: str  # e.g. "differs in status, closed_at"


@dataclass
class DriftReport:
    sampled: int = 0
    judged: int = 0
    not_judged: int = 0  # changed at or after the horizon, or deleted in the CRM
    drifted: list[Drifted] = field(default_factory=list)

    def metadata(self, entity: str) -> dict[str, Any]:
        keys = [d.key for d in self.drifted]
        return {
            "sampled": self.sampled,
            "judged": self.judged,
            "not_judged": self.not_judged,
            "drifted": len(keys),
            "drifted_keys": {str(d.key): d.problem for d in self.drifted[:20]},
            "repair": f"hrdv resync {entity} " + " ".join(f"--id {k}" for k in keys[:20]) if keys else "-",
        }


# --- reading --------------------------------------------------------------------------------------
def compared_columns(source: psycopg.Connection, entity: str, staged_columns: Sequence[str]) -> list[str]:
    """The staged columns the CRM table has (a column the CRM has not added yet is NULL in staging)."""
    present = {name for (name,) in source.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s", [entity])}
    columns = [c for c in staged_columns if c not in PIPELINE_COLUMNS and c in present]
    key = _key(entity)
    if not columns or columns[0] != key:
        raise ValueError(f"{entity}: the key column {key} must come first, got {columns[:3]}")
    return columns


def _key(entity: str) -> str:
    return BY_NAME[entity].key if entity in BY_NAME else "id"


def _select_list(entity: str, columns: Sequence[str]) -> sql.Composable:
    """The compared columns as staging holds them: jsonb as the text Debezium sent."""
    types = {c.name: c.type for c in BY_NAME[entity].columns} if entity in BY_NAME else {}
    return sql.SQL(", ").join(
        sql.SQL("{}::text AS {}").format(sql.Identifier(c), sql.Identifier(c)) if types.get(c) == "jsonb"
        else sql.Identifier(c) for c in columns)


def _commit_time_sql(source: psycopg.Connection, changed_at: str | None) -> sql.Composable:
    tracked = source.execute("SHOW track_commit_timestamp").fetchone()[0] == "on"
    fallback = sql.Identifier(changed_at) if changed_at else sql.SQL("NULL::timestamptz")
    if not tracked:
        return fallback
    return sql.SQL("coalesce(pg_xact_commit_timestamp(xmin), {})").format(fallback)


def source_rows(source: psycopg.Connection, entity: str, columns: Sequence[str], keys: Sequence[Any],
                changed_at: str | None = "updated_at") -> dict[Any, dict[str, Any]]:
    """CRM rows of `keys` by key: the compared columns, `_committed` (the current version's commit
    time) and `_busy` (a transaction is changing the row right now)."""
    query = sql.SQL(
        "SELECT {columns}, {committed} AS _committed, "
        "xmax::text <> '0' AND xmax::text::bigint = ANY (ARRAY(SELECT mod(x::text::bigint, 4294967296) "
        "FROM pg_snapshot_xip(pg_current_snapshot()) AS x)) AS _busy "
        "FROM public.{table} WHERE {key} = ANY (%s)").format(
        columns=_select_list(entity, columns), key=sql.Identifier(_key(entity)),
        committed=_commit_time_sql(source, changed_at), table=sql.Identifier(entity))
    cur = source.execute(query, [list(keys)])
    names = [c.name for c in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def staged_rows(db: psycopg.Connection, entity: str, columns: Sequence[str],
                keys: Sequence[Any]) -> dict[Any, dict[str, Any]]:
    query = sql.SQL("SELECT {columns}, is_deleted, lsn, committed_at FROM staging.{table} "
                    "WHERE {key} = ANY (%s)").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)), table=sql.Identifier(entity),
        key=sql.Identifier(_key(entity)))
    cur = db.execute(query, [list(keys)])
    names = [c.name for c in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def random_staged_keys(db: psycopg.Connection, entity: str, size: int) -> list[int]:
    """About `size` staged keys from random pages (TABLESAMPLE SYSTEM: no full scan)."""
    if size <= 0:
        return []
    estimate = db.execute("SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = %s::regclass",
                          [f"staging.{entity}"]).fetchone()[0]
    percent = min(100.0, 100.0 * 3 * size / estimate)
    query = sql.SQL("SELECT {} FROM staging.{} TABLESAMPLE SYSTEM (%s) LIMIT %s").format(
        sql.Identifier(_key(entity)), sql.Identifier(entity))
    return [key for (key,) in db.execute(query, [percent, size])]


# --- judging --------------------------------------------------------------------------------------
def judge(keys: Iterable[int], staged: dict[int, dict], source: dict[int, dict], columns: Sequence[str],
          horizon: datetime) -> DriftReport:
    """Compare staged rows with CRM rows (see the module's docstring for the rules)."""
    report = DriftReport()
    for key in sorted(set(keys)):
        report.sampled += 1
        crm, row = source.get(key), staged.get(key)
        if crm is None or crm["_committed"] is None or crm["_committed"] >= horizon:
            report.not_judged += 1
            continue
        report.judged += 1
        if row is None:
            report.drifted.append(Drifted(key, f"in the CRM since {crm['_committed']:%Y-%m-%d %H:%M:%S}, "
                                               "never staged"))
        elif row["is_deleted"]:
            report.drifted.append(Drifted(key, "staged as deleted, present in the CRM"))
        elif differing := [c for c in columns if row[c] != crm[c]]:
            report.drifted.append(Drifted(key, "differs in " + ", ".join(differing)))
    return report


def check(db: psycopg.Connection, source: psycopg.Connection, entity: str, staged_columns: Sequence[str],
          keys: Sequence[Any], horizon: datetime, changed_at: str | None = "updated_at") -> DriftReport:
    """Drift of `keys` between staging (db) and the CRM (source) as of `horizon`."""
    columns = compared_columns(source, entity, staged_columns)
    return judge(keys, staged_rows(db, entity, columns, keys),
                 source_rows(source, entity, columns, keys, changed_at), columns, horizon)


def window_samples(changed: dict[str, list[int]], random_keys: Sequence[int], size: int) -> dict[str, list[int]]:
    """Per window: up to `size` of the keys it changed and up to `size` of `random_keys`."""
    pick = random.Random(0)
    return {key: sorted(set(pick.sample(ids, min(size, len(ids)))) |
                        set(pick.sample(list(random_keys), min(size, len(random_keys)))))
            for key, ids in changed.items()}


# --- repairing -------------------------------------------------------------------------------------
@dataclass
class Resynced:
    position: int  # the CRM's WAL position the rows were read at (their new LSN)
    rows: int      # versions written to the buffer (deletes included)
    deleted: int   # keys gone from the CRM but staged: written as deletes
    unknown: list[int]  # keys neither in the CRM nor staged: nothing to repair
    removed_versions: list[tuple[int, int, str, int, int]]  # (id, lsn, topic, partition, offset)
    staged_lsn_reset: int


def _read_consistently(source: psycopg.Connection, entity: str, columns: Sequence[str],
                       keys: Sequence[int]) -> tuple[dict[int, dict], int]:
    """CRM rows of `keys` and the WAL position they are current at, none of them being changed."""
    for _ in range(RESYNC_ATTEMPTS):
        with source.transaction():
            source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            position = source.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]
            rows = source_rows(source, entity, columns, keys, BY_NAME[entity].changed_at if entity in BY_NAME else None)
        if not any(row["_busy"] for row in rows.values()):
            return rows, int(position)
        time.sleep(0.05)
    busy = sorted(k for k, row in rows.items() if row["_busy"])
    raise RuntimeError(f"rows {busy[:10]} of {entity} kept being changed; try again")


def resync(source: psycopg.Connection, db: psycopg.Connection, clickhouse_dsn: str, entity: str,
           staged_columns: Sequence[str], keys: Sequence[int]) -> Resynced:
    """Re-read `keys` from the CRM into the pipeline (see the module's docstring)."""
    columns = compared_columns(source, entity, staged_columns)
    rows, position = _read_consistently(source, entity, columns, keys)
    key_column = _key(entity)
    staged = {key for (key,) in db.execute(sql.SQL("SELECT {k} FROM staging.{t} WHERE {k} = ANY (%s)").format(
        k=sql.Identifier(key_column), t=sql.Identifier(entity)), [list(keys)])}
    unknown = [key for key in keys if key not in rows and key not in staged]
    keys = [key for key in keys if key not in unknown]  # a typo must not become a staged delete
    if not keys:
        return Resynced(position, 0, 0, unknown, [], 0)
    buffer = f"hrdv.{entity}_buffer"
    array = "Array(Int64)" if BY_NAME.get(entity) is None or BY_NAME[entity].key_is_integer else "Array(String)"
    with clickhouse.session(clickhouse_dsn) as client:
        impossible = client.query(
            f"SELECT {key_column}, lsn, _topic, _partition, _offset FROM {buffer} "
            f"WHERE {key_column} IN {{keys:{array}}} AND lsn > {{position:UInt64}} ORDER BY {key_column}, lsn",
            parameters={"keys": list(keys), "position": position}).result_rows
        if impossible:
            client.command(f"DELETE FROM {buffer} WHERE {key_column} IN {{keys:{array}}} "
                           "AND lsn > {position:UInt64}", parameters={"keys": list(keys), "position": position})
        now = datetime.now(timezone.utc)
        versions = [_version(rows.get(key), key, columns, position, now) for key in keys]
        client.insert(buffer, versions, column_names=[*columns, "op", "lsn", "committed_at", "is_deleted",
                                                      "_topic", "_partition", "_offset"])
    reset = db.execute(sql.SQL("UPDATE staging.{t} SET lsn = 0 WHERE {k} = ANY (%s) AND lsn > %s").format(
        t=sql.Identifier(entity), k=sql.Identifier(key_column)), [list(keys), position]).rowcount
    db.commit()
    return Resynced(position, len(versions), sum(1 for k in keys if k not in rows), unknown,
                    [tuple(r) for r in impossible], reset)


def _version(row: dict | None, key: int, columns: Sequence[str], position: int, now: datetime) -> list:
    """A buffer row for `key`: the CRM's row, or a delete when the CRM no longer has it."""
    values = [row[c] for c in columns] if row else [key, *([None] * (len(columns) - 1))]
    return [*values, "r" if row else "d", position, now, 0 if row else 1, RESYNC_TOPIC, 0, 0]


# --- the command line ------------------------------------------------------------------------------
def _entity(_ctx: click.Context, _param: click.Parameter, name: str):
    try:
        return entity_named(name)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _keys(entity, ids: Sequence[str]) -> list:
    """--id values as the entity's key type (integers for id keys, text for codes)."""
    if not entity.key_is_integer:
        return sorted(set(ids))
    bad = [i for i in ids if not i.lstrip("-").isdigit()]
    if bad:
        raise click.BadParameter(f"{entity.name} keys are integers ({entity.key}), got {bad}", param_hint="--id")
    return sorted({int(i) for i in ids})


def _newest_staged_window_end(db: psycopg.Connection, entity: str) -> datetime | None:
    """End of the window of the newest staged commit: runs stage whole, complete windows, so
    every CRM commit before it is staged."""
    from partitions import key_of, window_of

    newest = db.execute(sql.SQL("SELECT max(committed_at) FROM staging.{}").format(
        sql.Identifier(entity))).fetchone()[0]
    return window_of(key_of(newest)).end if newest else None


@click.command("drift")
@click.argument("entity", callback=_entity, default="interactions")
@click.option("--sample", type=click.IntRange(min=1), default=1000, show_default=True,
              help="staged keys to compare, from random pages of the staging table")
@click.option("--id", "ids", multiple=True, help="compare these keys (repeatable) instead")
def drift_command(entity, sample: int, ids: tuple[str, ...]) -> None:
    """Compare staged rows with the CRM now, as the staging check does each window; exit 1 on drift."""
    settings = load()
    with psycopg.connect(settings.hrdv_dsn) as db, psycopg.connect(settings.source_dsn) as source:
        horizon = _newest_staged_window_end(db, entity.name)
        if horizon is None:
            raise click.ClickException(f"staging.{entity.name} is empty: nothing to compare")
        keys = _keys(entity, ids) or random_staged_keys(db, entity.name, sample)
        report = check(db, source, entity.name, staged_columns(entity), keys, horizon, entity.changed_at)
    click.echo(f"staging.{entity.name} vs the CRM, rows committed before {horizon:%Y-%m-%d %H:%M %Z}: "
               f"{report.sampled} sampled, {report.judged} judged, {report.not_judged} not judged "
               f"(changed since, or deleted in the CRM), {len(report.drifted)} drifted")
    for drifted in report.drifted[:50]:
        click.echo(f"  {drifted.key}: {drifted.problem}")
    if report.drifted:
        click.echo(f"repair: {report.metadata(entity.name)['repair']}")
        sys.exit(1)


@click.command("resync")
@click.argument("entity", callback=_entity)
@click.option("--id", "ids", multiple=True, required=True, help="a key to re-read (repeatable)")
def resync_command(entity, ids: tuple[str, ...]) -> None:
    """Re-read rows from the CRM into the pipeline: their staging is repaired by the next window's
    run, and the windows they change are recomputed by the late-change sensor."""
    settings = load()
    keys = _keys(entity, ids)
    with psycopg.connect(settings.source_dsn, autocommit=True) as source, \
            psycopg.connect(settings.hrdv_dsn) as db:
        done = resync(source, db, settings.clickhouse_dsn, entity.name, staged_columns(entity), keys)
    if done.unknown:
        click.echo(f"{entity.name}: not in the CRM and never staged, left alone: {done.unknown}")
    if not done.rows:
        raise click.ClickException(f"nothing to re-sync among {keys}")
    click.echo(f"{entity.name}: {done.rows} row(s) re-read from the CRM at LSN {done.position} "
               f"({done.deleted} gone from the CRM, written as deletes) into hrdv.{entity.name}_buffer")
    for key, lsn, topic, partition, offset in done.removed_versions:
        click.echo(f"  removed from the buffer: {entity.key} {key} lsn {lsn} (beyond the source), from {topic} "
                   f"partition {partition} offset {offset}")
    if done.staged_lsn_reset:
        click.echo(f"  {done.staged_lsn_reset} staged row(s) carried an LSN beyond the source: reset, "
                   "so the re-read version replaces them")
    click.echo("staging takes them when the current window closes; the late-change sensor then "
               "recomputes the earlier windows they change")

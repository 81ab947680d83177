"""The KPI marts the catalog generates, on PostgreSQL with a replayed CRM day (no Kafka needed).

A CRM gets a bulk history and one replayed day (updates, deletes, reopenings, repeats, abandoned
contacts, transfers, operators' states, reference changes); its tables are copied into a database
shaped like staging (tests/crm_mirror.py) and every mart of the day's 96 windows is published in
one transaction, as a backfill does. Then:
- at least one indicator of every kind and every dimension set equals a hand-written pandas
  computation from the CRM tables (tests/kpi_by_hand.py), per window, hour and day;
- hourly and daily values are those of the period's rows (percentiles, distinct counts), of the
  sums of their parts (ratios, averages) and of the period's last window (snapshots);
- each publication rule fails on data seeded to break it, names itself and the rows, and leaves
  the published state as it was;
- the window queries read the fact tables through indexes (no sequential scan in EXPLAIN).
"""
from __future__ import annotations

import dataclasses
import math
import time
from datetime import date, datetime, timedelta, timezone

import mart_compare
import psycopg
import pytest
from crm_mirror import copy_crm, create
from kpi_by_hand import CHECKED, Crm

from hrdv import catalog as kpi_catalog
from hrdv import catalog_sql, marts
from hrdv.catalog import DimensionSet
from hrdv.crm.behaviour import Behaviour

DAY = date(2026, 11, 24)
DAY_START = datetime(2026, 11, 23, 21, 0, tzinfo=timezone.utc)  # 00:00 Moscow
WINDOW = timedelta(minutes=15)
WINDOWS = [DAY_START + i * WINDOW for i in range(96)]
CUSTOMERS = 40_000
FACTS = ("interactions", "work_orders", "claims", "operator_states")
# Claims within the day (by default they come days after the contact and take ten to decide).
BEHAVIOUR = dataclasses.replace(Behaviour(), claim_share=0.2, claim_after_breach_share=0.4,
                                claim_delay_median_s=3600, claim_review_median_s=1800,
                                claim_decision_median_s=4 * 3600)


@pytest.fixture(scope="module")
def day(crm_postgres):
    """(CRM dsn, mirror dsn, catalog) with the day published."""
    from hrdv.crm import bulk_load, live, reference
    from hrdv.stack import postgres

    crm = postgres.recreate_database(crm_postgres, "kpi_crm")
    with psycopg.connect(crm, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
    bulk_load.load(crm, customers=CUSTOMERS, seed=21, history_days=2, jobs=1, progress=False, as_of=DAY_START)
    stats = live.run_replay(crm, DAY, speedup=math.inf, seed=22, progress_every=1e9, behaviour=BEHAVIOUR)
    mirror = create(crm_postgres, "kpi_mirror")
    copy_crm(crm, mirror)
    catalog = kpi_catalog.load()
    with psycopg.connect(mirror) as conn:
        conn.execute(catalog_sql.ddl(catalog))
        conn.commit()
        began = time.perf_counter()
        with conn.transaction():
            publication = marts.publish(conn, catalog, WINDOWS, WINDOW)
            assert publication.passed, publication.failures()
        print(f"\nreplayed day: {stats.changes} CRM changes; all marts of its 96 windows with their hours and "
              f"day in {time.perf_counter() - began:.2f} s; {sum(publication.rows.values())} mart rows")
    return crm, mirror, catalog


def _mart(mirror: str, family: str, grain: str, indicator: str, dimension_set: DimensionSet) -> dict[tuple, float]:
    dims = list(dimension_set.dimensions)
    select = ", ".join(["period_start", *dims, "value"])
    with psycopg.connect(mirror) as conn:
        rows = conn.execute(f"SELECT {select} FROM {catalog_sql.table(family, grain)} "
                            "WHERE indicator = %s AND dimension_set = %s", (indicator, dimension_set.name)).fetchall()
    return {tuple(row[:-1]): row[-1] for row in rows}


def _assert_equal(got: dict, expected: dict, what: str) -> None:
    missing, extra = set(expected) - set(got), set(got) - set(expected)
    assert not missing and not extra, f"{what}: rows missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
    wrong = [(k, got[k], expected[k]) for k in expected if not mart_compare.same_figure(got[k], expected[k])]
    assert not wrong, f"{what}: {len(wrong)} value(s) differ, e.g. {wrong[:3]}"


def _periods(grain: str) -> list[tuple[datetime, datetime]]:
    if grain == "window":
        return [(s, s + WINDOW) for s in WINDOWS]
    return catalog_sql.periods_of(grain, WINDOWS)


def test_the_day_has_every_kind_of_change(day) -> None:
    crm, _, _ = day
    with psycopg.connect(crm) as conn:
        counts = conn.execute("""SELECT
            count(*) FILTER (WHERE abandoned_at IS NOT NULL), count(*) FILTER (WHERE transfer_count > 0),
            count(*) FILTER (WHERE reopen_count > 0), count(*) FILTER (WHERE previous_interaction_id IS NOT NULL),
            count(*) FILTER (WHERE closed_at IS NULL AND abandoned_at IS NULL)
            FROM interactions WHERE created_at >= %s""", (DAY_START,)).fetchone()
        states = conn.execute("SELECT count(*) FROM operator_states").fetchone()[0]
    assert all(counts) and states, f"abandoned, transferred, reopened, repeats, open: {counts}; states {states}"


@pytest.mark.parametrize("indicator_id", sorted(CHECKED))
def test_an_indicator_equals_its_hand_computation_at_every_grain(day, indicator_id: str) -> None:
    crm_dsn, mirror, catalog = day
    compute, set_names, family = CHECKED[indicator_id]
    crm = _crm(crm_dsn)
    declared = {s.name for s in catalog.families[family].sets_of(catalog.indicator(indicator_id)[1])}
    assert set(set_names) <= declared, f"{indicator_id} is not cut by {set(set_names) - declared}"
    for grain in catalog_sql.GRAINS:
        for name in set_names:
            dimension_set = DimensionSet.parse(name)
            expected = compute(crm, list(dimension_set.dimensions), _periods(grain))
            assert expected, f"{indicator_id} by {name} per {grain}: the day gives no row to compare"
            got = _mart(mirror, family, grain, indicator_id, dimension_set)
            _assert_equal(got, expected, f"{indicator_id} by {name} per {grain}")


def test_every_kind_and_every_dimension_set_is_checked_by_hand(day) -> None:
    _, _, catalog = day
    indicators = {i.id: (f, i) for f, i in catalog.indicators}
    kinds = {indicators[name][1].kind for name in CHECKED}
    assert kinds == {i.kind for _, i in catalog.indicators}
    checked = {(CHECKED[name][2], s) for name in CHECKED for s in CHECKED[name][1]}
    every = {(f.name, s.name) for f in catalog.families.values() for s in f.dimension_sets}
    assert every <= checked, f"dimension sets no hand computation checks: {sorted(every - checked)}"


_CRM: dict[str, Crm] = {}


def _crm(dsn: str) -> Crm:
    if dsn not in _CRM:
        _CRM[dsn] = Crm(dsn)
    return _CRM[dsn]


# --- rules guard publication ----------------------------------------------------------------------
W = DAY_START + 40 * WINDOW  # 10:00 Moscow, a busy window
SEEDS = {
    # A contact closed an hour before it was created: a negative resolution time, and a backlog
    # that no longer balances (it leaves a window it never entered).
    # A contact created an hour after it was closed in W: a negative resolution time in W.
    "no_negative_values": "UPDATE staging.interactions SET created_at = closed_at + interval '1 hour' "
                          "WHERE id = (SELECT min(id) FROM staging.interactions WHERE closed_at >= %(w)s "
                          "AND closed_at < %(w)s + interval '15 minutes')",
    # A contact created in W and closed an hour before: it leaves a window it never entered.
    "backlog_balances": "UPDATE staging.interactions SET closed_at = created_at - interval '1 hour' "
                        "WHERE id = (SELECT min(id) FROM staging.interactions WHERE created_at >= %(w)s "
                        "AND created_at < %(w)s + interval '15 minutes')",
    # Busy states in W that end 13 minutes before they start: occupancy leaves 0..1.
    "shares_within_0_1": "INSERT INTO staging.operator_states (id, employee_id, state, started_at, ended_at, "
                         "updated_at, lsn, committed_at) SELECT -g, (SELECT min(employee_id) FROM "
                         "staging.operator_states), 'busy', %(w)s + interval '14 minutes', %(w)s + interval "
                         "'1 minute', %(w)s, 0, %(w)s FROM generate_series(1, 100) AS g",
    "dimension_keys_exist": "UPDATE staging.interactions SET region_code = 'RU-XXX' WHERE id = (SELECT min(id) "
                            "FROM staging.interactions WHERE created_at >= %(w)s AND created_at < %(w)s + interval '15 minutes')",
}
# Rules no staging row can break (the SQL keeps them by construction): the mart is tampered with
# after the computation, inside the publishing transaction, as a bug would.
TAMPERED = {
    "details_sum_to_totals": "UPDATE mart.kpi_interactions_window SET value = value + 1 WHERE ctid = (SELECT ctid "
                             "FROM mart.kpi_interactions_window WHERE period_start = %(w)s AND indicator = "
                             "'contacts_received' AND dimension_set = 'channel' LIMIT 1)",
    "rollups_match_windows": "UPDATE mart.kpi_interactions_hour SET value = value + 1 WHERE ctid = (SELECT ctid "
                             "FROM mart.kpi_interactions_hour WHERE period_start = %(h)s AND indicator = "
                             "'contacts_received' AND dimension_set = 'total')",
}


def _published_state(conn: psycopg.Connection, catalog) -> list[tuple]:
    state = []
    for family in catalog.families.values():
        for grain in catalog_sql.GRAINS:
            state.append(conn.execute(
                f"SELECT count(*), sum(value), max(published_at) FROM {catalog_sql.table(family, grain)}").fetchone())
    return state


@pytest.mark.parametrize("rule", sorted(SEEDS) + sorted(TAMPERED))
def test_a_rule_fails_on_data_seeded_to_break_it_and_the_published_state_stays(day, rule: str) -> None:
    _, mirror, catalog = day
    hour = catalog_sql.hour_of(W)[0]
    with psycopg.connect(mirror) as conn:
        before = _published_state(conn, catalog)
        failures = None
        with conn.transaction():  # what publish_kpi_marts does: commit only when every rule passed
            if rule in SEEDS:
                assert conn.execute(SEEDS[rule], {"w": W}).rowcount >= 1, "nothing to seed"
                publication = marts.publish(conn, catalog, [W], WINDOW)
            else:
                publication = marts.publish(conn, catalog, [W], WINDOW)
                assert publication.passed, publication.failures()
                assert conn.execute(TAMPERED[rule], {"w": W, "h": hour}).rowcount == 1
                cur = conn.cursor()
                publication.results = marts.check(cur, catalog, {g: marts._periods(g, [W], WINDOW)
                                                                 for g in catalog_sql.GRAINS}, WINDOW)
            failures = publication.failures()
            if not publication.passed:
                raise psycopg.Rollback()
        failed = {text.split(":", 1)[0] for text in failures}
        assert rule in failed, f"{rule} did not fail: {failures}"
        named = next(text for text in failures if text.startswith(rule))
        assert "offending row(s)" in named and "period_start=" in named or "value=" in named, named
        assert _published_state(conn, catalog) == before, "a failed publication changed the marts"


# --- cost bounded by the window -------------------------------------------------------------------
def test_window_queries_read_fact_tables_through_indexes_only(day) -> None:
    _, mirror, catalog = day
    seq_scans = []
    with psycopg.connect(mirror) as conn:
        conn.execute("SET enable_seqscan = off")  # any sequential scan left is one no index can avoid
        for family in catalog.families.values():
            scripts = [("window", catalog_sql.compute_sql(catalog, family, "window")),
                       ("day", catalog_sql.compute_sql(catalog, family, "day", catalog_sql.rows_indicators(family)))]
            for grain, script in scripts:
                if "ARRAY[]" in script:  # no indicator of the family recomputes from rows
                    continue
                params = {"starts": [p[0] for p in _periods(grain)[:1]], "ends": [p[1] for p in _periods(grain)[:1]]}
                for statement in catalog_sql.statements(script):
                    plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement, params))
                    seq_scans += [(family.name, grain, line.strip()) for line in plan.splitlines()
                                  if "Seq Scan on" in line and any(f" {t} " in line + " " for t in FACTS)]
        conn.rollback()
    assert not seq_scans, f"sequential scans of fact tables: {seq_scans}"


# --- the open window --------------------------------------------------------------------------------
def test_provisional_marts_are_the_final_sql_over_the_overlay_and_give_way_to_the_final(day) -> None:
    """The open window's compute is the final one over staging overlaid with provisional.<fact>:
    with nothing buffered since, it equals the published window; a change buffered since moves it;
    the final publication removes it; the live view never shows a window twice."""
    from hrdv import provisional

    _, mirror, catalog = day
    window = WINDOWS[60]
    params = {"starts": [window], "ends": [window + WINDOW]}
    relations = catalog_sql.provisional_relations(catalog)

    def refresh(conn: psycopg.Connection, family) -> None:
        target = catalog_sql.provisional_table(family)
        for statement in catalog_sql.statements(catalog_sql.compute_sql(catalog, family, "window", target=target,
                                                                        relations=relations)):
            conn.execute(statement, params)

    with psycopg.connect(mirror) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for family in catalog.families.values():
            refresh(conn, family)
            final = mart_compare.rows_by_key(conn, catalog_sql.table(family, "window"), "period_start = %s", [window])
            assert final and not mart_compare.differences(
                mart_compare.rows_by_key(conn, catalog_sql.provisional_table(family), "period_start = %s", [window]), final), \
                family.name
            shown = conn.execute(f"SELECT count(*), bool_or(provisional) FROM {catalog_sql.live_view(family)} "
                                 "WHERE period_start = %s", [window]).fetchone()
            assert shown == (len(final), False), f"{family.name}: the live view shows a published window twice"
        # Buffered since: the window's first contact deleted (a newer version in provisional.interactions).
        victim, lsn = conn.execute(
            "SELECT id, lsn FROM staging.interactions WHERE created_at >= %s AND created_at < %s AND NOT is_deleted "
            "ORDER BY created_at LIMIT 1", [window, window + WINDOW]).fetchone()
        conn.execute("INSERT INTO provisional.interactions (id, is_deleted, lsn, committed_at) "
                     "VALUES (%s, true, %s, now())", [victim, lsn + 1])
        interactions = catalog.families["interactions"]
        refresh(conn, interactions)
        received = {table: conn.execute(
            f"SELECT value FROM {table} WHERE period_start = %s AND indicator = 'contacts_received' "
            "AND dimension_set = 'total'", [window]).fetchone()[0]
            for table in (catalog_sql.table(interactions, "window"), catalog_sql.provisional_table(interactions))}
        assert received[catalog_sql.provisional_table(interactions)] == received[catalog_sql.table(interactions, "window")] - 1
        # The final publication's transaction replaces the window's provisional rows.
        with conn.cursor() as cur:
            provisional.replace_with_final(cur, catalog, [window])
        for family in catalog.families.values():
            assert not mart_compare.rows_by_key(conn, catalog_sql.provisional_table(family), "period_start = %s", [window]), \
                family.name
        conn.rollback()


def test_the_provisional_compute_reads_staging_through_indexes_only(day) -> None:
    """Through the overlay the fact tables of staging are still read by index (the provisional
    copies, a few minutes of changes, may be scanned)."""
    _, mirror, catalog = day
    relations = catalog_sql.provisional_relations(catalog)
    seq_scans = []
    with psycopg.connect(mirror) as conn:
        conn.execute("SET enable_seqscan = off")
        params = {"starts": [WINDOWS[60]], "ends": [WINDOWS[60] + WINDOW]}
        for family in catalog.families.values():
            script = catalog_sql.compute_sql(catalog, family, "window", target=catalog_sql.provisional_table(family),
                                             relations=relations)
            for statement in catalog_sql.statements(script):
                plan = "\n".join(row[0] for row in conn.execute("EXPLAIN (VERBOSE) " + statement, params))
                seq_scans += [(family.name, line.strip()) for line in plan.splitlines()
                              if "Seq Scan on staging." in line and any(f"staging.{t} " in line for t in FACTS)]
        conn.rollback()
    assert not seq_scans, f"sequential scans of staging's fact tables through the overlay: {seq_scans}"


# --- bottlenecks ------------------------------------------------------------------------------------
INCIDENT_SQL = """
INSERT INTO staging.interactions (id, customer_id, channel_code, region_code, topic_code, queue_code,
    direction, status, created_at, updated_at, reopen_count, transfer_count, lsn, committed_at)
SELECT -g, c.id, 'call', c.region_code, %(topic)s, 'q_call', 'inbound', 'new',
       %(w)s + g * interval '4 seconds', %(w)s + g * interval '4 seconds', 0, 0, 0, %(w)s
FROM generate_series(1, 150) AS g
JOIN LATERAL (SELECT id, region_code FROM staging.customers ORDER BY id OFFSET g LIMIT 1) AS c ON true"""


def test_an_injected_incident_ranks_first_and_leaves_its_usual_range(day) -> None:
    _, mirror, catalog = day
    with psycopg.connect(mirror) as conn, conn.transaction(force_rollback=True):
        # Four earlier weeks like this day: its own values are the usual ones.
        for family, grain in ((f, g) for f in catalog.families.values() for g in ("window", "day")):
            columns = ", ".join(["indicator", "dimension_set", *family.used_dimensions, "value", "numerator",
                                 "denominator", "rows"])
            table = catalog_sql.table(family, grain)
            for weeks in range(1, 5):
                conn.execute(f"INSERT INTO {table} (period_start, period_end, {columns}) "
                             f"SELECT period_start - %(back)s, period_end - %(back)s, {columns} FROM {table} "
                             "WHERE period_start >= %(day)s AND period_start < %(day)s + interval '1 day'",
                             {"back": timedelta(weeks=weeks), "day": DAY_START})
        for weeks in range(1, 5):
            conn.execute("INSERT INTO mart.kpi_publications (window_start, window_end) SELECT s - %(back)s, "
                         "s - %(back)s + %(w)s FROM unnest(%(starts)s::timestamptz[]) AS s",
                         {"back": timedelta(weeks=weeks), "w": WINDOW, "starts": WINDOWS})
        # An outage: 150 calls on a topic that is usually quiet, in window W.
        topic = conn.execute("SELECT code FROM staging.topics WHERE parent_code IS NOT NULL AND code NOT IN "
                             "(SELECT topic_code FROM staging.interactions WHERE created_at >= %(w)s AND "
                             "created_at < %(w)s + interval '15 minutes') ORDER BY code LIMIT 1", {"w": W}).fetchone()[0]
        conn.execute(INCIDENT_SQL, {"topic": topic, "w": W})
        assert marts.publish(conn, catalog, [W], WINDOW).passed
        rows = conn.execute("SELECT member, rank, unusual, value, usual_median, value_week_before FROM "
                            "mart.kpi_bottlenecks_window WHERE bottleneck = 'most_frequent_topics' AND "
                            "period_start = %s ORDER BY rank", (W,)).fetchall()
        assert rows[0][:3] == (topic, 1, "above"), rows[:3]
        assert rows[0][3] == 150 and rows[0][4] == 0, rows[0]  # usually no call on it at all
        assert [r for r in rows[1:] if r[2] is not None] == [], "topics without an incident flagged"
        quiet = conn.execute("SELECT count(*) FROM mart.kpi_bottlenecks_window WHERE period_start = %s "
                             "AND unusual IS NOT NULL AND member IS DISTINCT FROM %s", (W - WINDOW, topic)).fetchone()[0]
        assert quiet == 0, conn.execute("SELECT * FROM mart.kpi_bottlenecks_window WHERE period_start = %s AND unusual IS NOT NULL", (W - WINDOW,)).fetchall()
        daily = conn.execute("SELECT rank, unusual FROM mart.kpi_bottlenecks_day WHERE bottleneck = "
                             "'most_frequent_topics' AND period_start = %s AND member = %s",
                             (catalog_sql.day_of(W)[0], topic)).fetchone()
        assert daily is not None and daily[1] == "above", daily


# --- as Dagster runs it ---------------------------------------------------------------------------
def test_the_dagster_asset_publishes_every_mart_of_a_window_with_its_rules(day) -> None:
    from dagster import AssetMaterialization, DagsterInstance, materialize

    from hrdv_assets.cdc import STAGED
    from hrdv_assets.kpi import ALL_KEYS, PUBLICATIONS_KEY, kpi_assets
    from partitions import key_of, window_of
    from resources.postgres import PostgresResource

    _, mirror, catalog = day
    instance = DagsterInstance.ephemeral()
    key = key_of(datetime.now(timezone.utc) - timedelta(minutes=3))
    resources = {"hrdv_db": PostgresResource(dsn=mirror)}
    refused = materialize(kpi_assets, partition_key=key, instance=instance, resources=resources,
                          raise_on_error=False)
    assert not refused.success  # staging of the window has not run
    for name in FACTS:
        instance.report_runless_asset_event(AssetMaterialization(STAGED[name].staging_key, partition=key))
    partial = materialize(kpi_assets, partition_key=key, instance=instance, resources=resources,
                          selection=ALL_KEYS[:2], raise_on_error=False)
    assert not partial.success, "a selection of some marts of a window must be refused"
    result = materialize(kpi_assets, partition_key=key, instance=instance, resources=resources)
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == set(ALL_KEYS)
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {r.name for r in marts.RULES} and all(c.passed for c in checks)
    log = next(e.materialization.metadata for e in result.get_asset_materialization_events()
               if e.asset_key == PUBLICATIONS_KEY)
    assert log["windows_in_run"].value == 1 and log["window_start"].value == window_of(key).start.isoformat()
    with psycopg.connect(mirror) as conn:
        assert conn.execute("SELECT count(*) FROM mart.kpi_publications WHERE window_start = %s",
                            (window_of(key).start,)).fetchone()[0] == 1

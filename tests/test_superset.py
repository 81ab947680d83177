"""The dashboards on a real Apache Superset, read by a real browser (Debian's chromium, Playwright).

A day of marts (a small CRM's today, replayed and published) in a database of its own on the test
stack's PostgreSQL, read by Superset as the reporting login; the dashboards of dashboards/*.yaml
applied to a Superset started fresh. Then:
- applying twice gives no duplicates; applying with one chart removed from the files deletes it;
- the login page is Russian; every dashboard draws every chart: none fails, and none is empty when
  the marts hold a value for it (its own filters, translated to SQL, say which); screenshots go to
  $HRDV_SCREENSHOTS (default test-artifacts/screenshots, kept by CI);
- on every dashboard, a number drawn equals the mart's value, formatted the Russian way;
- a click on a region drills down: the branches' table shows that region's branches, as the mart.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import yaml
from crm_mirror import copy_crm, create
from superset_browser import (browser, click_cell, login, login_page_text, open_dashboard, screenshot,
                             table_column, wait_for_column)

from hrdv import catalog as kpi_catalog
from hrdv import catalog_sql, marts, provisional
from hrdv.crm.behaviour import Behaviour
from hrdv.dashboards import assets, spec
from hrdv.dashboards.cli import apply_dashboards, bundle_for
from hrdv.dashboards.superset_api import Superset
from hrdv.settings import REPO_ROOT

pytestmark = pytest.mark.stack

MSK = catalog_sql.REPORTING_TZ
DATABASE = "superset_marts"
WINDOW = timedelta(minutes=15)
SCREENSHOTS = Path(os.environ.get("HRDV_SCREENSHOTS", REPO_ROOT / "test-artifacts" / "screenshots"))
SQL_RANGES = {  # spec.TIME_RANGES in SQL, on the views' Moscow-time period_msk
    "today : tomorrow": ("date_trunc('day', now() AT TIME ZONE 'Europe/Moscow')",
                         "date_trunc('day', now() AT TIME ZONE 'Europe/Moscow') + interval '1 day'"),
    'DATEADD(DATETIME("now"), -1, day) : now': ("now() AT TIME ZONE 'Europe/Moscow' - interval '1 day'",
                                                "now() AT TIME ZONE 'Europe/Moscow'"),
    'DATEADD(DATETIME("today"), -6, day) : tomorrow': (
        "date_trunc('day', now() AT TIME ZONE 'Europe/Moscow') - interval '6 days'",
        "date_trunc('day', now() AT TIME ZONE 'Europe/Moscow') + interval '1 day'"),
}


@pytest.fixture(scope="module")
def marts_day(stack) -> str:
    """Today's marts of a 3 000-customer CRM, with freshness rows and a dead letter: the DSN."""
    from hrdv.crm import bulk_load, live, reference
    from hrdv.stack import postgres

    day_start = datetime.now(MSK).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)
    crm = postgres.recreate_database(stack, "superset_crm")
    with psycopg.connect(crm, autocommit=True) as conn:
        reference.apply_schema_and_reference(conn)
    bulk_load.load(crm, customers=3000, seed=31, history_days=1, jobs=1, progress=False, as_of=day_start)
    # Claims within the day (by default they come days after the contact), as in test_kpi_marts.
    behaviour = dataclasses.replace(Behaviour(), claim_share=0.2, claim_after_breach_share=0.4,
                                    claim_delay_median_s=3600, claim_review_median_s=1800,
                                    claim_decision_median_s=4 * 3600)
    live.run_replay(crm, (day_start + timedelta(hours=3)).date(), speedup=math.inf, seed=32, progress_every=1e9,
                    behaviour=behaviour)
    dsn = create(stack, DATABASE)
    copy_crm(crm, dsn, skip=("contact_persons",))
    catalog = kpi_catalog.load()
    now = datetime.now(timezone.utc)
    with psycopg.connect(dsn) as conn:
        conn.execute(catalog_sql.ddl(catalog))
        conn.commit()
        with conn.transaction():
            publication = marts.publish(conn, catalog, [day_start + i * WINDOW for i in range(96)], WINDOW)
            assert publication.passed, publication.failures()
        found = {name: provisional.Stage(name, now - timedelta(seconds=5 * n), None, now)
                 for n, name in enumerate(provisional.STAGES, start=1)}
        provisional.record(conn, found, now)
        conn.execute("INSERT INTO mart.dead_letter_counts VALUES ('crm.public.interactions', 'not JSON', 3, now(), now())")
        conn.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {stack.reporting.user}; "
                     f"GRANT USAGE ON SCHEMA mart TO {stack.reporting.user}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA mart TO {stack.reporting.user}")
        conn.commit()
    return dsn


@pytest.fixture(scope="module")
def superset(stack, marts_day):
    from hrdv.stack import superset as superset_stack

    superset_stack.start(stack)
    superset_stack.wait_healthy(stack)
    try:
        yield stack
    finally:
        superset_stack.stop(stack)


def _ours(client: Superset) -> dict[str, list[str]]:
    return {"chart": sorted(c["uuid"] for c in client.list("chart", ["uuid", "is_managed_externally"])
                            if c["is_managed_externally"]),
            "dashboard": sorted(d["uuid"] for d in client.list("dashboard", ["uuid"])),
            "dataset": sorted(d["uuid"] for d in client.list("dataset", ["uuid"]))}


def test_applying_twice_duplicates_nothing_and_a_chart_removed_from_the_files_is_deleted(superset, tmp_path) -> None:
    settings = superset
    bundle = bundle_for(settings, DATABASE)
    apply_dashboards(settings, database=DATABASE)
    client = Superset(settings.superset_url, settings.superset_admin.user, settings.superset_admin.password)
    first = _ours(client)
    assert set(first["chart"]) == bundle.uuids("charts")
    assert set(first["dashboard"]) == bundle.uuids("dashboards")
    assert set(first["dataset"]) == bundle.uuids("datasets")

    apply_dashboards(settings, database=DATABASE)
    assert _ours(client) == first

    shutil.copytree(spec.DASHBOARDS_DIR, tmp_path / "dashboards")
    territories = tmp_path / "dashboards" / "territories.yaml"
    content = yaml.safe_load(territories.read_text())
    removed = content["rows"][0].pop(0)
    assert removed["chart"] == "map"
    territories.write_text(yaml.safe_dump(content, allow_unicode=True))
    fewer = bundle_for(settings, DATABASE, tmp_path / "dashboards")
    gone = bundle.uuids("charts") - fewer.uuids("charts")
    assert len(gone) == 1
    applied = apply_dashboards(settings, database=DATABASE, directory=tmp_path / "dashboards")
    assert len(applied.deleted) == 1 and "карта" in applied.deleted[0]
    assert set(_ours(client)["chart"]) == fewer.uuids("charts")

    apply_dashboards(settings, database=DATABASE)  # as the repository has it, for the browser tests
    assert _ours(client) == first


def _where(params: dict) -> tuple[str, list]:
    """A chart's adhoc filters as SQL on its dataset (the operators the generator writes)."""
    parts, args = [], []
    for f in params.get("adhoc_filters", []):
        if f["expressionType"] == "SQL":
            parts.append(f["sqlExpression"])
        elif f["operator"] == "TEMPORAL_RANGE":
            start, end = SQL_RANGES[f["comparator"]]
            parts.append(f"{f['subject']} >= {start} AND {f['subject']} < {end}")
        elif f["operator"] == "==":
            parts.append(f"{f['subject']} = %s")
            args.append(f["comparator"])
        elif f["operator"] == "IN":
            parts.append(f"{f['subject']} = ANY(%s)")
            args.append(f["comparator"])
        else:
            parts.append(f"{f['subject']} {f['operator']}")
    return " AND ".join(parts) or "true", args


def _has_rows(dsn: str, table: str, params: dict) -> bool:
    where, args = _where(params)
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT EXISTS (SELECT 1 FROM mart.{table} WHERE {where})", args).fetchone()[0]


def d3_ru(value: float, fmt: str) -> str:
    """A number as Superset draws it with the stack's D3_FORMAT (decimal comma, no-break space)."""
    if fmt.endswith("%"):
        digits = int(fmt[2:-1])
        text = f"{value * 100:,.{digits}f}%"
    elif fmt == ",d":
        text = f"{round(value):,d}"
    else:
        text = f"{value:,.{int(fmt[2:-1])}f}"
    return text.replace(",", "\u00a0").replace(".", ",")


def test_d3_ru_formats_as_russian_readers_expect() -> None:
    assert d3_ru(22126, ",d") == "22\u00a0126"
    assert d3_ru(0.1324, ",.1%") == "13,2%"
    assert d3_ru(1234.567, ",.2f") == "1\u00a0234,57"


def _expected_number(dsn: str, chart: dict, dataset: dict) -> str | None:
    """The value a big number or the first row of a ranked table must show, from the mart."""
    params = chart["params"]
    where, args = _where(params)
    if params.get("query_mode") == "raw" and params.get("column_config"):
        column, config = next(iter(params["column_config"].items()))
        order = ", ".join(f"{c} {'ASC' if up else 'DESC'}" for c, up in map(yaml.safe_load, params["order_by_cols"]))
        with psycopg.connect(dsn) as conn:
            row = conn.execute(f"SELECT {column} FROM mart.{dataset['table_name']} WHERE {where} "
                               f"ORDER BY {order or 1} LIMIT 1", args).fetchone()
        return None if row is None or row[0] is None else d3_ru(row[0], config["d3NumberFormat"])
    metrics = {m["metric_name"]: m for m in dataset["metrics"]}
    name = params.get("metric") or (params.get("metrics") or [None])[0]
    if name not in metrics:
        return None
    group = params.get("groupby") if chart["viz_type"] == "table" else None
    select = f"SELECT {metrics[name]['expression']} AS v FROM mart.{dataset['table_name']} WHERE {where}"
    if group:
        select += f" GROUP BY {', '.join(group)} ORDER BY v DESC NULLS LAST LIMIT 1"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(select, args).fetchone()
    return None if row is None or row[0] is None else d3_ru(row[0], metrics[name]["d3format"])


def test_an_additive_indicator_without_rows_in_published_windows_is_zero_and_nothing_published_is_null(
        marts_day) -> None:
    """The marts write no row for a zero: the metric makes it 0 over rows of the family, NULL over none."""
    _, backlog = kpi_catalog.load().indicator("claims_backlog")
    metric = assets.metric_sql(backlog, "window")
    with psycopg.connect(marts_day) as conn:
        quiet = conn.execute(
            "SELECT period_start FROM mart.report_claims_window GROUP BY period_start "
            "HAVING bool_and(indicator <> 'claims_backlog') ORDER BY period_start LIMIT 1").fetchone()
        assert quiet is not None, "no window of the day without open claims: the fixture changed"
        zero = conn.execute(f"SELECT {metric} FROM mart.report_claims_window WHERE period_start = %s", quiet)
        none = conn.execute(f"SELECT {metric} FROM mart.report_claims_window WHERE period_start < '2000-01-01'")
        assert (zero.fetchone()[0], none.fetchone()[0]) == (0, None)


def _owes_a_value(dsn: str, chart: dict, dataset: dict) -> bool:
    """Whether a chart drawn empty should have drawn something: a big number, when its metric over
    the mart is not NULL (a share of no open claims is rightly "Нет данных"); any other chart, when
    the mart has rows for its filters."""
    if chart["viz_type"] == "big_number_total":
        return _expected_number(dsn, chart, dataset) is not None
    return _has_rows(dsn, dataset["table_name"], chart["params"])


def test_every_dashboard_draws_every_chart_in_russian_with_the_marts_numbers(superset, marts_day, tmp_path) -> None:
    settings = superset
    apply_dashboards(settings, database=DATABASE)
    bundle = bundle_for(settings, DATABASE)
    client = Superset(settings.superset_url, settings.superset_admin.user, settings.superset_admin.password)
    by_uuid = {c["uuid"]: c for path, c in bundle.files.items() if path.startswith("charts/")}
    datasets = {d["uuid"]: d for path, d in bundle.files.items() if path.startswith("datasets/")}
    ids = {c["id"]: by_uuid[c["uuid"]] for c in client.list("chart", ["id", "uuid"]) if c["uuid"] in by_uuid}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems, timings = [], {}
    with browser(tmp_path / "profile") as context:
        page = context.new_page()
        text = login_page_text(page, settings.superset_url)
        assert "Войти" in text or "Имя пользователя" in text, f"the login page is not Russian: {text[:300]!r}"
        login(page, settings.superset_url, settings.superset_admin.user, settings.superset_admin.password)
        for dashboard in spec.load(kpi_catalog.load()):
            report = open_dashboard(page, settings.superset_url, assets.SLUG_PREFIX + dashboard.slug, timeout_s=180)
            screenshot(page, SCREENSHOTS / f"{dashboard.slug}.png")
            timings[dashboard.slug] = report.seconds_all_tabs
            checked = 0
            for shown in report.charts:
                chart = ids[shown.chart_id]
                dataset = datasets[chart["dataset_uuid"]]
                if shown.state == "error":
                    problems.append(f"{dashboard.slug}: {shown.title}: {shown.error}")
                elif shown.state == "empty" and _owes_a_value(marts_day, chart, dataset):
                    problems.append(f"{dashboard.slug}: {shown.title}: empty, but the mart has a value for it")
                elif shown.state == "drawn" and chart["viz_type"] in ("big_number_total", "table"):
                    expected = _expected_number(marts_day, chart, dataset)
                    if expected is not None:
                        drawn = shown.big_number if chart["viz_type"] == "big_number_total" else shown.text
                        if expected not in (drawn or ""):
                            problems.append(f"{dashboard.slug}: {shown.title}: shows {drawn[:200]!r}, "
                                            f"the mart says {expected!r}")
                        checked += 1
            if not checked:
                problems.append(f"{dashboard.slug}: no number compared with its mart")
            assert len(report.charts) == sum(1 for p in bundle.files[f"dashboards/{dashboard.slug}.yaml"]["position"]
                                             if p.startswith("CHART-")), f"{dashboard.slug}: charts missing"
    print(f"\ndashboards drawn (s, every chart): {timings}; screenshots in {SCREENSHOTS}")
    assert not problems, "\n".join(problems)


def test_a_click_on_a_region_drills_down_to_its_branches(superset, marts_day, tmp_path) -> None:
    """Территории: a click on a region in the regions' table cross-filters the branches' table to
    that region's branches, exactly those the mart has for it (the drill-down a manager expects)."""
    settings = superset
    apply_dashboards(settings, database=DATABASE)
    bundle = bundle_for(settings, DATABASE)
    placed = {p["meta"]["sliceName"]: p["meta"]["uuid"]
              for key, p in bundle.files["dashboards/territories.yaml"]["position"].items() if key.startswith("CHART-")}
    charts = {c["uuid"]: c for path, c in bundle.files.items() if path.startswith("charts/")}
    regions, branches = (placed[f"Обращения по измерению «{name}», сегодня"] for name in ("Регион", "Филиал"))
    client = Superset(settings.superset_url, settings.superset_admin.user, settings.superset_admin.password)
    ids = {c["uuid"]: c["id"] for c in client.list("chart", ["id", "uuid"])}
    with browser(tmp_path / "profile") as context:
        page = context.new_page()
        login(page, settings.superset_url, settings.superset_admin.user, settings.superset_admin.password)
        open_dashboard(page, settings.superset_url, assets.SLUG_PREFIX + "territories", timeout_s=180)
        before = table_column(page, ids[branches])
        region = table_column(page, ids[regions])[0]
        where, args = _where(charts[branches]["params"])
        with psycopg.connect(marts_day) as conn:
            expected = {row[0] for row in conn.execute(
                f"SELECT DISTINCT branch FROM mart.report_interactions_day WHERE {where} AND region = %s",
                [*args, region])}
        assert expected and set(before) - expected, f"the day has no branch outside {region}: nothing to drill into"
        click_cell(page, ids[regions], region)
        shown = wait_for_column(page, ids[branches], lambda cells: set(cells) <= expected)
        screenshot(page, SCREENSHOTS / "territories-drilled-down.png")
    page_length = charts[branches]["params"]["page_length"]
    assert set(shown) == expected if len(expected) <= page_length else len(shown) == page_length, \
        f"{region}: the branches' table shows {shown}, the mart has {sorted(expected)}"

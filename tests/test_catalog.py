"""The KPI catalog on its own (no stack): it loads, counts its series, says exactly what is wrong
with a malformed entry, and the generated docs are current."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hrdv import catalog as kpi_catalog
from hrdv import catalog_sql
from hrdv.catalog import ROLL_UP, CatalogError
from hrdv.catalog_cli import DOCS, markdown
from hrdv.entities import BY_NAME


@pytest.fixture(scope="module")
def catalog():
    return kpi_catalog.load()


def test_the_catalog_gives_at_least_300_series_each_counted_from_its_entries(catalog) -> None:
    by_hand = 0
    for path in sorted(kpi_catalog.CATALOG_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "indicators" not in data:
            continue
        for entry in data["indicators"]:
            sets = entry["dimensions"]
            by_hand += len(data["dimension_sets"][sets] if isinstance(sets, str) else sets)
    assert len(catalog.series) == by_hand >= 300
    assert len({s.id for s in catalog.series}) == len(catalog.series), "a series id twice"


def test_every_kind_and_the_listed_subjects_are_covered(catalog) -> None:
    kinds = {indicator.kind for _, indicator in catalog.indicators}
    assert kinds == set(ROLL_UP), f"kinds without an indicator: {set(ROLL_UP) - kinds}"
    ids = {indicator.id for _, indicator in catalog.indicators}
    for wanted in ("contacts_received", "contacts_per_10k_customers", "first_response_time_p90",
                   "resolution_time_avg", "service_level", "contacts_abandoned", "first_contact_resolution",
                   "repeat_rate_24h", "repeat_rate_7d", "repeat_rate_30d", "reopen_rate", "backlog_open",
                   "backlog_age_avg", "response_sla_compliance", "transfers", "occupancy",
                   "contacts_per_operator_hour", "completed_per_engineer", "postponements",
                   "first_visit_completion", "work_order_backlog", "claims_per_10k_customers",
                   "amount_claimed", "claims_resolved_in_time", "claim_outcomes", "status_distribution"):
        assert wanted in ids


def test_a_vendor_dependent_definition_is_a_parameter_with_a_documented_default(catalog) -> None:
    parameter = catalog.parameters["service_level_abandoned"]
    assert parameter.value in parameter.choices and "Cisco" in parameter.description
    _, indicator = catalog.indicator("service_level")
    assert "interval '5 seconds'" in catalog.render(indicator.filter)


def _broken_copy(tmp_path: Path, file: str, edit) -> Path:
    directory = tmp_path / "catalog"
    shutil.copytree(kpi_catalog.CATALOG_DIR, directory)
    data = yaml.safe_load((directory / file).read_text(encoding="utf-8"))
    edit(data)
    (directory / file).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory


def _entry(data: dict, indicator_id: str) -> dict:
    return next(e for e in data["indicators"] if e["id"] == indicator_id)


@pytest.mark.parametrize(("file", "edit", "words"), [
    ("interactions.yaml", lambda d: _entry(d, "service_level").update(kind="mean"),
     ["interactions.yaml", "entry 'service_level'", "field indicators.", ".kind", "Input should be"]),
    ("interactions.yaml", lambda d: _entry(d, "resolution_time_avg").pop("measure"),
     ["interactions.yaml", "entry 'resolution_time_avg'", "kind average needs measure"]),
    ("work_orders.yaml", lambda d: _entry(d, "postponements").update(event="visited"),
     ["work_orders.yaml", "entry 'postponements'", "field event", "'visited'"]),
    ("claims.yaml", lambda d: _entry(d, "amount_claimed").update(dimensions=["total", "colour"]),
     ["claims.yaml", "entry 'amount_claimed'", "field dimensions", "colour"]),
    ("claims.yaml", lambda d: _entry(d, "claims_backlog").update(filter="x.status = 'open'"),
     ["claims.yaml", "entry 'claims_backlog'", "field filter", "unknown alias", "'x'"]),
    ("operators.yaml", lambda d: _entry(d, "occupancy").update(unexpected=1),
     ["operators.yaml", "entry 'occupancy'", "unexpected", "Extra inputs are not permitted"]),
    ("interactions.yaml", lambda d: d["events"].update(created={"time": "born_at"}),
     ["interactions.yaml", "event 'created'", "born_at"]),
    ("parameters.yaml", lambda d: d["parameters"]["service_level_abandoned"].update(value="sometimes"),
     ["parameters.yaml", "service_level_abandoned", "'sometimes' is not one of"]),
    ("claims.yaml", lambda d: d.pop("as_of"), ["claims.yaml", "as_of", "created_at"]),
    ("operators.yaml", lambda d: d.update(as_of="begun_at"), ["operators.yaml", "as_of", "begun_at", "started_at"]),
])
def test_a_malformed_entry_names_the_file_the_entry_and_the_field(tmp_path, file, edit, words) -> None:
    with pytest.raises(CatalogError) as error:
        kpi_catalog.load(_broken_copy(tmp_path, file, edit))
    message = str(error.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"{missing} not in:\n{message}"


def test_adding_an_indicator_is_one_entry_and_no_python(tmp_path) -> None:
    def add(data: dict) -> None:
        data["indicators"].append({
            "id": "chats_received", "names": {"ru": "Поступило чатов", "en": "Chats received"},
            "description": "Chats created in the period.", "unit": "contacts", "kind": "count",
            "event": "created", "filter": "f.channel_code = 'chat'", "dimensions": "service"})
    catalog = kpi_catalog.load(_broken_copy(tmp_path, "interactions.yaml", add))
    family, indicator = catalog.indicator("chats_received")
    assert len(catalog.series) == len(kpi_catalog.load().series) + len(family.sets_of(indicator))
    assert "'chats_received'" in catalog_sql.compute_sql(catalog, family, "window")


def test_the_generated_sql_reads_each_row_once_and_each_event_with_all_its_dimension_sets(catalog) -> None:
    family = catalog.families["interactions"]
    sql = catalog_sql.compute_sql(catalog, family, "window")
    statements = catalog_sql.statements(sql)
    events = [name for name, _ in family.spec.events.items() if any(i.event == name for i in family.indicators)]
    assert len(statements) == 2  # the DELETE, then one statement inserting every event's figures
    assert statements[1].count("FROM staging.interactions AS f") == 1  # rows and joins read once
    assert statements[1].count("INSERT INTO mart.kpi_interactions_window") == len(events)
    assert sql.count("GROUPING SETS") == len(events)
    assert "mart.kpi_base_active_customers" in sql  # the rate's population, counted apart
    # As-of joins read the history version valid at the row's as_of moment (its creation).
    assert family.spec.as_of == "created_at"
    assert sql.count("FROM staging.customers_history AS h") == 2  # the version then, or the first
    assert "h.valid_from <= f.created_at" in sql


def test_the_roll_up_rule_of_each_kind(catalog) -> None:
    kinds = {i.kind: i.roll_up for _, i in catalog.indicators}
    assert kinds["percentile"] == "rows" and kinds["distinct"] == "rows"  # never from windows
    assert kinds["snapshot"] == "last" and kinds["ratio"] == "parts" and kinds["average"] == "parts"


def test_late_windows_of_an_entity_list_the_events_its_figures_read(catalog) -> None:
    sql = catalog_sql.late_windows_sql(catalog, BY_NAME["interactions"])
    assert "(new).transfer_count IS DISTINCT FROM (old).transfer_count" in sql
    assert catalog_sql.late_windows_sql(catalog, BY_NAME["tariffs"]) is None


def test_docs_catalog_md_is_current(catalog) -> None:
    assert DOCS.read_text(encoding="utf-8") == markdown(catalog), \
        "docs/catalog.md is not current: run ./hrdv.sh catalog docs"

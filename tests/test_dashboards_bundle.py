"""The Superset bundle built from dashboards/*.yaml and the KPI catalog (pure: no Superset).

- a new catalog indicator gets its chart on its family's dashboard with no hand work;
- native filters name datasets by uuid only (Superset issues 30424, 18109), and each applies only to
  charts that have its column;
- no password in any file of the bundle; the same uuids on every build;
- a dashboard file naming something the catalog lacks is refused with what is expected.
"""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from hrdv import catalog as kpi_catalog
from hrdv.catalog import CATALOG_DIR
from hrdv.dashboards import assets, spec

URI = "postgresql+psycopg2://hrdv_reporting:XXXXXXXXXX@127.0.0.1:5432/hrdv"


def _bundle(catalog=None, directory: Path = spec.DASHBOARDS_DIR) -> assets.Bundle:
    catalog = catalog or kpi_catalog.load()
    return assets.build(catalog, spec.load(catalog, directory), URI)


def _charts(bundle: assets.Bundle) -> dict[str, dict]:
    return {p: c for p, c in bundle.files.items() if p.startswith("charts/")}


def test_a_new_indicator_appears_on_its_dashboard_with_no_hand_work(tmp_path) -> None:
    shutil.copytree(CATALOG_DIR, tmp_path / "catalog")
    family = tmp_path / "catalog" / "interactions.yaml"
    content = yaml.safe_load(family.read_text())
    content["indicators"].append({"id": "contacts_by_bots", "names": {"ru": "Обращения к ботам", "en": "Bot contacts"},
                                  "description": "Contacts answered by a bot.", "unit": "contacts", "kind": "count",
                                  "event": "created", "filter": "f.channel_code = 'chat'", "dimensions": "standard"})
    family.write_text(yaml.safe_dump(content, allow_unicode=True))
    before, after = _bundle(), _bundle(kpi_catalog.load(tmp_path / "catalog"))
    new = {p: c for p, c in _charts(after).items() if p not in _charts(before)}
    assert [c["slice_name"] for c in new.values()] == ["Обращения к ботам"]
    dashboard = after.files["dashboards/interactions.yaml"]
    assert any(node.get("meta", {}).get("uuid") == next(iter(new.values()))["uuid"]
               for node in dashboard["position"].values() if isinstance(node, dict))
    dataset = after.files["datasets/report_interactions_window.yaml"]
    assert "contacts_by_bots" in {m["metric_name"] for m in dataset["metrics"]}


def test_native_filters_name_datasets_by_uuid_and_spare_charts_without_their_column() -> None:
    bundle = _bundle()
    datasets = {d["uuid"]: d for p, d in bundle.files.items() if p.startswith("datasets/")}
    for path, dashboard in bundle.files.items():
        if not path.startswith("dashboards/"):
            continue
        chart_ids = {n["meta"]["chartId"]: n["meta"]["uuid"] for n in dashboard["position"].values()
                     if isinstance(n, dict) and n.get("type") == "CHART"}
        charts = {c["uuid"]: c for c in _charts(bundle).values()}
        for native in dashboard["metadata"]["native_filter_configuration"]:
            for target in native["targets"]:
                assert "datasetId" not in target
                if target:
                    assert target["datasetUuid"] in datasets
                    column = target["column"]["name"]
                    for number in set(chart_ids) - set(native["scope"]["excluded"]):
                        columns = {c["column_name"] for c in datasets[charts[chart_ids[number]]["dataset_uuid"]]["columns"]}
                        assert column in columns, f"{path}: {native['name']} applies to a chart without {column}"


def test_no_password_in_the_bundle_and_the_same_uuids_every_build() -> None:
    first, second = _bundle(), _bundle()
    assert first.files == second.files
    archive = zipfile.ZipFile(io.BytesIO(first.zip()))
    names = archive.namelist()
    assert all(name.startswith(assets.BUNDLE_ROOT + "/") for name in names)  # Superset strips one folder
    database = yaml.safe_load(archive.read(f"{assets.BUNDLE_ROOT}/{assets.DATABASE_FILE}"))
    assert ":XXXXXXXXXX@" in database["sqlalchemy_uri"] and "password" not in database


def test_a_dashboard_naming_what_the_catalog_lacks_is_refused(tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text("slug: bad\ntitle: x\ndescription: y\nfilters: [district]\n"
                                       "rows:\n  - - {chart: number, family: interactions, indicator: contacts_received}\n")
    with pytest.raises(spec.DashboardError, match="filter 'district'; expected 'period' or a dimension"):
        spec.load(kpi_catalog.load(), tmp_path)
    (tmp_path / "bad.yaml").write_text("slug: bad\ntitle: x\ndescription: y\n"
                                       "rows:\n  - - {chart: table, family: claims, indicators: [claims_registered], "
                                       "dimension_set: channel}\n")
    with pytest.raises(spec.DashboardError, match="claims has no dimension set 'channel'; expected one of total"):
        spec.load(kpi_catalog.load(), tmp_path)

"""Superset's asset bundle (database, datasets, charts, dashboards) built from dashboards/*.yaml and
the KPI catalog.

Every object has a uuid derived from what it is (uuid5 of its name), so applying again updates it
in place; every dataset lists all its columns and metrics (the import deletes the ones missing);
native filters name their dataset by uuid (never by numeric id: Superset issues 30424, 18109); the
database's password is masked (the real one is passed at import). Metrics come from the catalog:
one per indicator, with the roll-up its kind allows over several rows (sum of numerators over sum
of denominators, never an average of averages).
"""
from __future__ import annotations

import io
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hrdv.catalog import Catalog, Family, Indicator
from hrdv.catalog_sql import report_dimensions
from hrdv.dashboards import spec
from hrdv.dashboards.spec import DashboardError

NAMESPACE = uuid.UUID("6a0f3f52-8f6e-4a39-9d3c-48524456d015")
BUNDLE_ROOT = "hrdv_dashboards"
DATABASE_FILE = "databases/hrdv.yaml"
SLUG_PREFIX = "hrdv-"
MSK = "время московское (МСК)"
PROVISIONAL_NOTE = "включая предварительные значения открытого окна"
STATUS_COLOURS = {"окончательно": "#1f77b4", "предварительно": "#ff9f1c"}
UNIT_RU = {"s": "с", "min": "мин", "h": "ч", "d": "дн.", "RUB": "₽"}
ADDITIVE_TODAY = {"count", "sum", "average", "ratio", "deadline", "rate", "snapshot"}


def uid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


# --- indicators as Superset metrics -----------------------------------------------------------------
def number_format(indicator: Indicator) -> str:
    """d3 format: explicit always (Superset's SMART_NUMBER ignores the Russian D3_FORMAT)."""
    if indicator.unit == "share":
        return ",.1%"
    if indicator.kind in ("count", "distinct") or (indicator.kind == "snapshot" and indicator.aggregate == "count"):
        return ",d"
    if indicator.kind == "sum" and indicator.unit == "RUB":
        return ",.0f"
    return ",.2f" if indicator.kind in ("rate", "per_distinct") else ",.1f"


def axis_format(indicator: Indicator) -> str:
    """A value axis's: a small count's ticks fall between whole numbers ("0,5"), which ",d" would
    print as repeated whole ones; trailing zeros are trimmed, so whole ticks read "1", "22 126"."""
    shown = number_format(indicator)
    return ",.2~f" if shown == ",d" else shown


def label(indicator: Indicator) -> str:
    unit = UNIT_RU.get(indicator.unit)
    return f"{indicator.names.ru}, {unit}" if unit else indicator.names.ru


def metric_sql(indicator: Indicator, source: str) -> str:
    """The indicator over any rows of its series: what its kind allows to combine.

    count, sum, count snapshots: the sum; averages, ratios, deadlines, other snapshots: sum of
    numerators over sum of denominators; rates: per `per` of the base (on `today`, the base of the
    newest window); percentiles and distinct counts: the value of the one row a chart groups by.

    The marts write no row for a zero, so an additive indicator over rows of its family without one
    of its own is 0 (no open claims at the newest window is "0", not "no data"); over no rows at
    all it stays NULL: nothing published is not a zero."""
    this = f"indicator = '{indicator.id}'"
    latest = f"{this} AND is_latest" if source == "today" else this
    if indicator.kind in ("count", "sum"):
        return _zero_when_published(f"SUM(numerator) FILTER (WHERE {this})")
    if indicator.kind == "snapshot" and indicator.aggregate == "count":
        return _zero_when_published(f"SUM(numerator) FILTER (WHERE {latest})")
    if indicator.kind == "snapshot":
        return f"SUM(numerator) FILTER (WHERE {latest}) / NULLIF(SUM(denominator) FILTER (WHERE {latest}), 0)"
    if indicator.kind in ("average", "ratio", "deadline"):
        return f"SUM(numerator) FILTER (WHERE {this}) / NULLIF(SUM(denominator) FILTER (WHERE {this}), 0)"
    if indicator.kind == "rate":
        return f"SUM(numerator) FILTER (WHERE {this}) * {indicator.per} / NULLIF(SUM(denominator) FILTER (WHERE {latest}), 0)"
    return f"AVG(value) FILTER (WHERE {this})"


def _zero_when_published(total: str) -> str:
    return f"CASE WHEN COUNT(*) > 0 THEN COALESCE({total}, 0) END"


def _metric(indicator: Indicator, source: str) -> dict:
    return {"metric_name": indicator.id, "verbose_name": label(indicator), "metric_type": None,
            "expression": metric_sql(indicator, source), "description": indicator.description,
            "d3format": number_format(indicator), "extra": {}, "warning_text": None}


# --- the bundle ---------------------------------------------------------------------------------------
@dataclass
class ChartRef:
    uuid: str
    number: int  # the placeholder chartId of the dashboard's position
    title: str
    dataset: str  # its dataset's key
    dimensions: frozenset[str]  # the dimensions its rows are cut by (with the coarser ones they lie within)
    period: bool  # the time filter applies
    height: int
    width: int = 0  # of 12; 0 = the row's width shared
    emits: tuple[str, ...] = ()  # the dimensions a click on one of its rows filters the dashboard by


@dataclass
class Dataset:
    key: str
    uuid: str
    columns: list[str]
    body: dict


@dataclass
class Bundle:
    """path inside the bundle's root -> the object's YAML content."""

    files: dict[str, dict] = field(default_factory=dict)

    def uuids(self, folder: str) -> set[str]:
        return {content["uuid"] for path, content in self.files.items() if path.startswith(folder + "/")}

    def zip(self) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr(f"{BUNDLE_ROOT}/metadata.yaml", yaml.safe_dump({"version": "1.0.0", "type": "assets"}))
            for path, content in sorted(self.files.items()):
                bundle.writestr(f"{BUNDLE_ROOT}/{path}", _yaml(content))
        return out.getvalue()

    def write(self, directory: Path) -> list[Path]:
        written = []
        for path, content in sorted(self.files.items()):
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_yaml(content))
            written.append(target)
        return written


def _yaml(content: dict) -> str:
    return yaml.safe_dump(content, allow_unicode=True, sort_keys=False, width=120)


class Builder:
    """Builds the bundle: datasets on first use, charts per dashboard, then the dashboards."""

    def __init__(self, catalog: Catalog, database_uri: str) -> None:
        self.catalog = catalog
        self.bundle = Bundle()
        self.database_uuid = uid("database", "hrdv")
        self.datasets: dict[str, Dataset] = {}
        self.bundle.files[DATABASE_FILE] = {
            "database_name": "HRDV — витрины", "sqlalchemy_uri": database_uri, "cache_timeout": None,
            "expose_in_sqllab": True, "allow_run_async": False, "allow_ctas": False, "allow_cvas": False,
            "allow_dml": False, "allow_file_upload": False,
            "extra": {"engine_params": {"connect_args": {"application_name": "hrdv-superset"}},
                      "metadata_params": {}, "schemas_allowed_for_file_upload": []},
            "uuid": self.database_uuid, "version": "1.0.0"}

    # --- datasets ---
    def family_dataset(self, family: Family, source: str) -> Dataset:
        key = f"report_{family.name}_{source}"
        if key in self.datasets:
            return self.datasets[key]
        dims, _ = report_dimensions(self.catalog, family)
        columns = ["period_msk", "period_start", "period_end", "indicator", "indicator_name", "unit",
                   "dimension_set", "value", "numerator", "denominator", "rows", "provisional", "data_status"]
        if source == "day":
            columns[12:12] = ["value_day_before", "value_week_before"]
        for d in dims:
            columns += [f"{d.name}_code", d.name]
        if any(d.name == "region" for d in dims):
            columns.append("region_map_code")
        columns.append("published_at")
        if source == "today":
            columns += ["day", "is_latest"]
        verbose = {d.name: self.catalog.dimensions[d.name].names.ru for d in dims}
        verbose |= {"period_msk": "Период (МСК)", "indicator_name": "Показатель", "data_status": "Данные",
                    "value": "Значение", "day": "День", "value_week_before": "Неделю назад",
                    "value_day_before": "Днём ранее"}
        indicators = [i for i in family.indicators if source != "today" or i.kind in ADDITIVE_TODAY]
        return self._dataset(key, columns, verbose, [_metric(i, source) for i in indicators],
                             f"{family.spec.names.ru}: {'сегодня и неделю назад' if source == 'today' else 'по ' + ('окнам' if source == 'window' else 'дням')}, {MSK}")

    def plain_dataset(self, key: str, columns: list[str], verbose: dict[str, str], metrics: list[dict],
                      description: str) -> Dataset:
        return self.datasets.get(key) or self._dataset(key, columns, verbose, metrics, description)

    def _dataset(self, key: str, columns: list[str], verbose: dict[str, str], metrics: list[dict],
                 description: str) -> Dataset:
        times = {c for c in columns if c.endswith("_msk") or c in ("period_start", "period_end", "published_at",
                                                                    "observed_at", "window_start", "window_end")}
        main = next((c for c in columns if c.endswith("_msk")), None)
        body = {
            "table_name": key, "main_dttm_col": main, "description": description, "default_endpoint": None,
            "offset": 0, "cache_timeout": None, "catalog": None, "schema": "mart", "sql": None, "params": None,
            "template_params": None, "filter_select_enabled": True, "fetch_values_predicate": None,
            "extra": None, "normalize_columns": False, "always_filter_main_dttm": False,
            "uuid": uid("dataset", key), "metrics": metrics,
            "columns": [{"column_name": c, "verbose_name": verbose.get(c), "is_dttm": c in times,
                         "is_active": True, "type": None, "advanced_data_type": None, "groupby": True,
                         "filterable": True, "expression": None, "description": None,
                         "python_date_format": None, "extra": {}} for c in columns],
            "version": "1.0.0", "database_uuid": self.database_uuid}
        dataset = Dataset(key, body["uuid"], columns, body)
        self.datasets[key] = dataset
        self.bundle.files[f"datasets/{key}.yaml"] = body
        return dataset

    # --- charts ---
    def chart(self, dashboard: str, key: str, title: str, viz: str, dataset: Dataset, params: dict,
              description: str, dimensions: frozenset[str] = frozenset(), period: bool = False,
              height: int = 50) -> ChartRef:
        chart_uuid = uid("chart", dashboard, key)
        body = {"slice_name": title, "description": description, "certified_by": None,
                "certification_details": None, "viz_type": viz,
                "params": {"viz_type": viz, "datasource": "0__table", **params},
                "query_context": None, "cache_timeout": None, "uuid": chart_uuid, "version": "1.0.0",
                "dataset_uuid": dataset.uuid, "is_managed_externally": True,
                "external_url": "https://github.com/hrdv/hrdv/tree/main/dashboards"}
        path = f"charts/{dashboard}_{key}.yaml".replace(":", "_").replace("+", "_")
        if path in self.bundle.files:
            raise DashboardError(f"dashboard {dashboard}: two charts are the same ({key}); drop one")
        self.bundle.files[path] = body
        number = sum(1 for p in self.bundle.files if p.startswith("charts/"))
        return ChartRef(chart_uuid, number, title, dataset.key, dimensions, period, height)


def build(catalog: Catalog, dashboards: list[spec.Dashboard], database_uri: str) -> Bundle:
    from hrdv.dashboards import charts, layout

    builder = Builder(catalog, database_uri)
    for dashboard in dashboards:
        rows: list[list[ChartRef]] = []
        for row in dashboard.rows:
            line: list[ChartRef] = []
            for chart in row:
                produced = charts.expand(builder, dashboard.slug, chart)
                if len(produced) == 1:
                    line += produced[0]
                else:  # a generated block: rows of its own
                    rows += [line] if line else []
                    rows += produced
                    line = []
            rows += [line] if line else []
        layout.add_dashboard(builder, dashboard, rows)
    return builder.bundle


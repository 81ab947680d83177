"""A dashboard's layout (Superset's position: rows of charts under the grid) and native filters.

Each native filter targets its column by dataset uuid and applies only to the charts whose rows are
cut by its dimension or a finer one (a region filter: region, branch, channel+region charts); the
others are listed as excluded, so no chart is filtered by a column it has not got.
"""
from __future__ import annotations

from hrdv.dashboards.assets import SLUG_PREFIX, STATUS_COLOURS, Builder, ChartRef, uid
from hrdv.dashboards.spec import PERIOD, Dashboard

GRID = "GRID_ID"
ROOT = "ROOT_ID"


def _row(position: dict, n: int, charts: list[ChartRef]) -> str:
    row_id = f"ROW-{n}"
    position[row_id] = {"type": "ROW", "id": row_id, "children": [], "parents": [ROOT, GRID],
                        "meta": {"background": "BACKGROUND_TRANSPARENT"}}
    fixed = sum(c.width for c in charts)
    free = [c for c in charts if not c.width]
    share = max(1, (12 - fixed) // len(free)) if free else 0
    for chart in charts:
        chart_id = f"CHART-{chart.number}"
        position[chart_id] = {"type": "CHART", "id": chart_id, "children": [], "parents": [ROOT, GRID, row_id],
                              "meta": {"chartId": chart.number, "uuid": chart.uuid, "sliceName": chart.title,
                                       "width": chart.width or share, "height": chart.height}}
        position[row_id]["children"].append(chart_id)
    return row_id


def _note(position: dict, text: str) -> str:
    position["ROW-note"] = {"type": "ROW", "id": "ROW-note", "children": ["MARKDOWN-note"], "parents": [ROOT, GRID],
                            "meta": {"background": "BACKGROUND_TRANSPARENT"}}
    position["MARKDOWN-note"] = {"type": "MARKDOWN", "id": "MARKDOWN-note", "children": [],
                                 "parents": [ROOT, GRID, "ROW-note"],
                                 "meta": {"code": text, "width": 12, "height": 12}}
    return "ROW-note"


def position_of(dashboard: Dashboard, rows: list[list[ChartRef]]) -> dict:
    position: dict = {"DASHBOARD_VERSION_KEY": "v2",
                      ROOT: {"type": "ROOT", "id": ROOT, "children": [GRID]},
                      GRID: {"type": "GRID", "id": GRID, "children": [], "parents": [ROOT]},
                      "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": dashboard.title}}}
    if dashboard.note:
        position[GRID]["children"].append(_note(position, dashboard.note))
    for n, charts in enumerate(rows):
        if charts:
            position[GRID]["children"].append(_row(position, n, charts))
    return position


def _applies(chart: ChartRef, name: str, builder: Builder) -> bool:
    if name == PERIOD:
        return chart.period
    return name in chart.dimensions and name in builder.datasets[chart.dataset].columns


def native_filters(builder: Builder, dashboard: Dashboard, charts: list[ChartRef]) -> list[dict]:
    filters = []
    ids = {name: f"NATIVE_FILTER-{dashboard.slug}-{name}" for name in dashboard.filters}
    for name in dashboard.filters:
        applies = [c for c in charts if _applies(c, name, builder)]
        if not applies:
            continue
        excluded = [c.number for c in charts if c not in applies]
        common = {"id": ids[name], "type": "NATIVE_FILTER", "description": "", "chartsInScope": [c.number for c in applies],
                  "scope": {"rootPath": [ROOT], "excluded": excluded}, "tabsInScope": [],
                  "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}}}
        if name == PERIOD:
            filters.append({**common, "name": "Период (МСК)", "filterType": "filter_time", "targets": [{}],
                            "controlValues": {}, "cascadeParentIds": []})
            continue
        dataset = builder.datasets[applies[0].dataset]
        parent = builder.catalog.dimensions[name].within
        filters.append({**common, "name": builder.catalog.dimensions[name].names.ru, "filterType": "filter_select",
                        "targets": [{"column": {"name": name}, "datasetUuid": dataset.uuid}],
                        "controlValues": {"multiSelect": True, "enableEmptyFilter": False, "defaultToFirstItem": False,
                                          "inverseSelection": False, "searchAllOptions": False, "sortAscending": True},
                        "cascadeParentIds": [ids[parent]] if parent in ids else []})
    return filters


def cross_filters(builder: Builder, charts: list[ChartRef]) -> tuple[dict, dict]:
    """Superset's chart_configuration and global_chart_configuration: a click on a row of a ranked
    table (a region) filters the charts cut by its dimensions or finer ones (the region's branches,
    its map), the drill-down from a region to its branches; other charts' clicks filter nothing.
    Chart numbers are the position's placeholders: the import maps them to the new ids."""
    everyone = [c.number for c in charts]
    configuration = {}
    for chart in charts:
        if not chart.emits:
            continue
        excluded = [c.number for c in charts
                    if c is chart or not all(_applies(c, name, builder) for name in chart.emits)]
        if len(excluded) < len(charts):
            configuration[str(chart.number)] = {"id": chart.number, "crossFilters": {
                "scope": {"rootPath": [ROOT], "excluded": excluded},
                "chartsInScope": [n for n in everyone if n not in excluded]}}
    return configuration, {"scope": {"rootPath": [ROOT], "excluded": everyone}, "chartsInScope": []}


def add_dashboard(builder: Builder, dashboard: Dashboard, rows: list[list[ChartRef]]) -> None:
    charts = [c for row in rows for c in row]
    configuration, global_configuration = cross_filters(builder, charts)
    refresh = 30 if any(builder.datasets[c.dataset].key.endswith(("_window", "_today")) or c.dataset == "report_freshness"
                        for c in charts) else 300
    builder.bundle.files[f"dashboards/{dashboard.slug}.yaml"] = {
        "dashboard_title": dashboard.title, "description": dashboard.description, "css": "",
        "slug": SLUG_PREFIX + dashboard.slug, "certified_by": None, "certification_details": None,
        "published": True, "uuid": uid("dashboard", dashboard.slug), "position": position_of(dashboard, rows),
        "metadata": {"native_filter_configuration": native_filters(builder, dashboard, charts),
                     "refresh_frequency": refresh, "timed_refresh_immune_slices": [], "expanded_slices": {},
                     "color_scheme": "supersetColors", "label_colors": STATUS_COLOURS, "shared_label_colors": [],
                     "map_label_colors": {}, "color_scheme_domain": [], "cross_filters_enabled": bool(configuration),
                     "chart_configuration": configuration, "global_chart_configuration": global_configuration,
                     "default_filters": "{}"},
        "is_managed_externally": True, "version": "1.0.0"}

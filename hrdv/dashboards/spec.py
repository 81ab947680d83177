"""The dashboards' files (dashboards/*.yaml), read and checked against the KPI catalog.

A file is one dashboard: its slug, title, note, native filters and rows of charts (see
dashboards/README.md). Every name a chart uses (family, indicator, dimension set) must exist in the
catalog; a mistake is an error naming the file, the chart and what is expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hrdv.catalog import Catalog, DimensionSet
from hrdv.settings import REPO_ROOT

DASHBOARDS_DIR = REPO_ROOT / "dashboards"

# Superset's time ranges (its relative times run on the server's clock: Moscow time, see
# hrdv/stack/superset.py). "Last day" would end at midnight and hide today.
TIME_RANGES = {
    "today": "today : tomorrow",
    "last_day": 'DATEADD(DATETIME("now"), -1, day) : now',
    "last_week": 'DATEADD(DATETIME("today"), -6, day) : tomorrow',
}
TimeRange = Literal["today", "last_day", "last_week"]
# Native filters: `period` (the time range) or a dimension of the catalog.
PERIOD = "period"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Placed(Strict):
    """A chart placed in a row: its width of 12 (0: the row's free width shared)."""
    width: int = Field(default=0, ge=0, le=12)


class Number(Placed):
    chart: Literal["number"]
    family: str
    indicator: str
    source: Literal["today", "day"] = "today"
    dimension_set: str = "total"


class Today(Placed):
    chart: Literal["today"]
    family: str
    indicators: list[str] = Field(min_length=1)
    dimension_set: str = "total"


class Series(Placed):
    chart: Literal["series"]
    family: str
    indicator: str
    dimension_set: str = "total"
    time_range: TimeRange = "last_day"


class Table(Placed):
    chart: Literal["table"]
    family: str
    indicators: list[str] = Field(min_length=1)
    dimension_set: str
    source: Literal["day", "window"] = "day"
    time_range: TimeRange = "today"


class Map(Placed):
    chart: Literal["map"]
    family: str
    indicator: str
    source: Literal["day", "window"] = "day"
    time_range: TimeRange = "today"


class Indicators(Strict):
    """Every indicator of a family, one chart each: generated from the catalog."""
    chart: Literal["indicators"]
    family: str
    dimension_set: str = "total"
    time_range: TimeRange = "last_day"
    per_row: int = Field(default=3, ge=1, le=6)


class Bottlenecks(Placed):
    chart: Literal["bottlenecks"]
    grain: Literal["day", "window"] = "day"
    time_range: TimeRange = "today"
    top: int = Field(default=5, ge=1, le=50)
    unusual_only: bool = False


class Freshness(Placed):
    chart: Literal["freshness"]
    show: Literal["stages", "provisional_age", "dead_letters_total", "stage_history", "publications", "dead_letters"]


Chart = Annotated[Union[Number, Today, Series, Table, Map, Indicators, Bottlenecks, Freshness],
                  Field(discriminator="chart")]


class Dashboard(Strict):
    slug: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    description: str
    note: str = ""
    filters: list[str] = []
    rows: list[list[Chart]] = Field(min_length=1)


class DashboardError(ValueError):
    """A dashboard file that does not load; the message names the file and what is expected."""


def load(catalog: Catalog, directory: Path = DASHBOARDS_DIR) -> list[Dashboard]:
    """Every dashboard file, checked against the catalog, in file-name order."""
    dashboards = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            dashboard = Dashboard.model_validate(yaml.safe_load(path.read_text()))
        except (ValidationError, yaml.YAMLError) as error:
            raise DashboardError(f"{_shown(path)}: {error}") from None
        _check(catalog, dashboard, path)
        dashboards.append(dashboard)
    slugs = [d.slug for d in dashboards]
    if len(set(slugs)) != len(slugs):
        raise DashboardError(f"two dashboard files share a slug: {sorted(slugs)}")
    return dashboards


def _shown(path: Path) -> Path:
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def _check(catalog: Catalog, dashboard: Dashboard, path: Path) -> None:
    where = _shown(path)
    for name in dashboard.filters:
        if name != PERIOD and name not in catalog.dimensions:
            raise DashboardError(f"{where}: filter {name!r}; expected {PERIOD!r} or a dimension: "
                                 f"{', '.join(catalog.dimensions)}")
    for row in dashboard.rows:
        for chart in row:
            family = getattr(chart, "family", None)
            if family is None:
                continue
            if family not in catalog.families:
                raise DashboardError(f"{where}: {chart.chart} chart: family {family!r}; expected one of "
                                     f"{', '.join(catalog.families)}")
            ids = [i.id for i in catalog.families[family].indicators]
            for indicator in [*getattr(chart, "indicators", []), *([chart.indicator] if hasattr(chart, "indicator") else [])]:
                if indicator not in ids:
                    raise DashboardError(f"{where}: {chart.chart} chart: {family} has no indicator {indicator!r}; "
                                         f"expected one of {', '.join(ids)}")
            wanted = getattr(chart, "dimension_set", None)
            if wanted is not None and DimensionSet.parse(wanted) not in catalog.families[family].dimension_sets:
                raise DashboardError(f"{where}: {chart.chart} chart: {family} has no dimension set {wanted!r}; "
                                     f"expected one of {', '.join(s.name for s in catalog.families[family].dimension_sets)}")


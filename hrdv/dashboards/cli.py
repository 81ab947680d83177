"""`hrdv dashboards`: build the Superset bundle from dashboards/*.yaml and the KPI catalog, apply it."""
from __future__ import annotations

import time
from pathlib import Path

import click

from hrdv import catalog as kpi_catalog
from hrdv.catalog import CatalogError
from hrdv.dashboards import assets, spec
from hrdv.dashboards.superset_api import Applied, Superset, SupersetError, apply
from hrdv.settings import Settings, load
from hrdv.stack.superset import reporting_uri


def bundle_for(settings: Settings, database: str = "hrdv", directory: Path = spec.DASHBOARDS_DIR) -> assets.Bundle:
    """The bundle of every dashboard file, its database the marts as the reporting login (the
    password masked: it is passed at import)."""
    try:
        catalog = kpi_catalog.load()
        dashboards = spec.load(catalog, directory)
        return assets.build(catalog, dashboards, reporting_uri(settings, database=database))
    except (CatalogError, spec.DashboardError) as error:
        raise click.ClickException(str(error)) from None


def apply_dashboards(settings: Settings, url: str | None = None, echo=click.echo, database: str = "hrdv",
                     directory: Path = spec.DASHBOARDS_DIR) -> Applied:
    """Import the bundle into the stack's Superset as its admin; delete what the files dropped."""
    bundle = bundle_for(settings, database, directory)
    began = time.perf_counter()
    superset = Superset(url or settings.superset_url, settings.superset_admin.user, settings.superset_admin.password)
    applied = apply(superset, bundle, assets.uid("database", "hrdv"), settings.reporting.password)
    echo(f"dashboards: {applied.dashboards} dashboards, {applied.charts} charts, {applied.datasets} datasets "
         f"applied to {url or settings.superset_url} in {time.perf_counter() - began:.1f} s"
         + (f"; deleted {len(applied.deleted)} no longer in dashboards/: {', '.join(applied.deleted)}"
            if applied.deleted else ""))
    return applied


@click.group(name="dashboards")
def dashboards_group() -> None:
    """The Superset dashboards kept as code (dashboards/*.yaml + the KPI catalog)."""


@dashboards_group.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write the bundle's YAML files into this folder (default: only check it builds)")
def build(out: Path | None) -> None:
    """Build the Superset bundle (database, datasets, charts, dashboards) and say what it holds."""
    bundle = bundle_for(load())
    click.echo(f"{len(bundle.uuids('dashboards'))} dashboards, {len(bundle.uuids('charts'))} charts, "
               f"{len(bundle.uuids('datasets'))} datasets")
    if out:
        written = bundle.write(out)
        click.echo(f"{len(written)} files written under {out}")


@dashboards_group.command(name="apply")
@click.option("--url", default=None, help="Superset's address (default: the stack's, HRDV_SUPERSET_PORT)")
def apply_command(url: str | None) -> None:
    """Create or update every dashboard in Superset; delete the charts the files no longer hold."""
    try:
        apply_dashboards(load(), url)
    except SupersetError as error:
        raise click.ClickException(str(error)) from None

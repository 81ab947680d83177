"""`hrdv catalog`: read the KPI catalog in the terminal, write its documentation, print its SQL."""
from __future__ import annotations

import sys


import click
from rich.console import Console
from rich.table import Table

from hrdv import catalog as kpi_catalog
from hrdv import catalog_sql
from hrdv.catalog import KIND_TEXT, Catalog, CatalogError
from hrdv.settings import REPO_ROOT

DOCS = REPO_ROOT / "docs" / "catalog.md"


def _load() -> Catalog:
    try:
        return kpi_catalog.load()
    except CatalogError as error:
        raise click.ClickException(f"the KPI catalog does not load:\n{error}") from None


@click.group(name="catalog")
def catalog_group() -> None:
    """The KPI catalog (catalog/*.yaml): list and show indicators, write the docs, print the SQL."""


@catalog_group.command(name="list")
@click.option("--entity", "family_name", default=None, help="only this family (interactions, work_orders, ...)")
@click.option("--dimension", default=None, help="only indicators cut by this dimension (e.g. region)")
@click.option("--kind", default=None, type=click.Choice(sorted(KIND_TEXT)), help="only this kind")
def list_indicators(family_name: str | None, dimension: str | None, kind: str | None) -> None:
    """A table of the indicators (filterable), with the number of series each gives."""
    catalog = _load()
    if family_name and family_name not in catalog.families:
        raise click.BadParameter(f"{family_name!r}; expected one of {', '.join(catalog.families)}",
                                 param_hint="--entity")
    if dimension and dimension not in catalog.dimensions:
        raise click.BadParameter(f"{dimension!r}; expected one of {', '.join(catalog.dimensions)}",
                                 param_hint="--dimension")
    table = Table(title="KPI catalog", show_lines=False)
    for column in ("family", "id", "название", "kind", "unit", "dimension sets", "series"):
        table.add_column(column, overflow="fold")
    shown = series = 0
    for family, indicator in catalog.indicators:
        sets = family.sets_of(indicator)
        if (family_name and family.name != family_name) or (kind and indicator.kind != kind) or \
                (dimension and not any(dimension in s.dimensions for s in sets)):
            continue
        shown, series = shown + 1, series + len(sets)
        table.add_row(family.name, indicator.id, indicator.names.ru, indicator.kind, indicator.unit,
                      ", ".join(s.name for s in sets), str(len(sets)))
    Console(width=200).print(table)
    click.echo(f"{shown} indicator(s), {series} series (of {len(catalog.series)} in the catalog)")


@catalog_group.command()
@click.argument("indicator_id")
def show(indicator_id: str) -> None:
    """Everything about one indicator: names, definition, parameters, dimension sets, target."""
    catalog = _load()
    try:
        family, indicator = catalog.indicator(indicator_id)
    except CatalogError as error:
        raise click.ClickException(str(error)) from None
    lines = [
        f"{indicator.id}  ({family.name}, catalog/{family.path.name})",
        f"  ru: {indicator.names.ru}",
        f"  en: {indicator.names.en}",
        f"  {catalog.render(indicator.description)}",
        f"  kind: {indicator.kind} ({KIND_TEXT[indicator.kind]}); roll-up: {indicator.roll_up}",
        f"  unit: {indicator.unit}; higher is better: {_better(indicator.higher_is_better)}",
        f"  event: {indicator.event} {family.spec.events[indicator.event].model_dump(by_alias=True, exclude_none=True)}",
    ]
    for name in ("filter", "measure", "condition", "weight", "numerator_weight", "quantile", "done", "due",
                 "per", "base", "aggregate"):
        value = getattr(indicator, name)
        if value is not None:
            lines.append(f"  {name}: {catalog.render(str(value), clipped_s='<seconds inside the period>')}")
    lines.append(f"  dimension sets: {', '.join(s.name for s in family.sets_of(indicator))}")
    if indicator.target:
        lines.append(f"  target: {indicator.target.value} (warn at {indicator.target.warn})")
    lines.append(f"  marts: {', '.join(catalog_sql.table(family, g) for g in catalog_sql.GRAINS)}")
    click.echo("\n".join(lines))


@catalog_group.command()
@click.option("--check", is_flag=True, help="exit 1 if docs/catalog.md is not what the catalog gives")
def docs(check: bool) -> None:
    """Write docs/catalog.md, the catalog as tables (CI runs it with --check)."""
    text = markdown(_load())
    if check:
        current = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
        if current != text:
            click.echo(f"{DOCS.relative_to(REPO_ROOT)} is not current: run `./hrdv.sh catalog docs`", err=True)
            sys.exit(1)
        click.echo(f"{DOCS.relative_to(REPO_ROOT)} is current")
        return
    DOCS.parent.mkdir(exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")
    click.echo(f"wrote {DOCS.relative_to(REPO_ROOT)}")


@catalog_group.command(name="sql")
@click.argument("family_name")
@click.option("--grain", type=click.Choice(catalog_sql.GRAINS), default="window", show_default=True)
def print_sql(family_name: str, grain: str) -> None:
    """Print the SQL the catalog gives for one family's mart at one grain."""
    catalog = _load()
    if family_name not in catalog.families:
        raise click.BadParameter(f"{family_name!r}; expected one of {', '.join(catalog.families)}")
    family = catalog.families[family_name]
    text = catalog_sql.compute_sql(catalog, family, grain) if grain == "window" else \
        catalog_sql.roll_up_sql(catalog, family, grain) + "\n" + catalog_sql.compute_sql(
            catalog, family, grain, catalog_sql.rows_indicators(family))
    click.echo(text)


def _better(value: bool | None) -> str:
    return "neutral" if value is None else "yes" if value else "no (lower is better)"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(catalog: Catalog) -> str:
    """The catalog as Markdown: a table per family, the dimensions, the parameters."""
    out = ["# KPI catalog", "",
           "Generated from `catalog/*.yaml` by `./hrdv.sh catalog docs`; CI checks it is current. "
           f"{sum(len(f.indicators) for f in catalog.families.values())} indicators, "
           f"{len(catalog.series)} series (indicator x dimension set) at every grain (window, hour, day). "
           "Every series can be read against the same period a day and a week earlier in the "
           "`mart.kpi_<family>_<grain>_compared` views.", ""]
    for family in catalog.families.values():
        out += [f"## {family.spec.names.ru} / {family.spec.names.en} (`{family.name}`)", "",
                f"{family.spec.description} Source: `staging.{family.entity.name}`; marts: "
                + ", ".join(f"`{catalog_sql.table(family, g)}`" for g in catalog_sql.GRAINS)
                + f"; owner: {family.spec.owner}.", "",
                "| id | название | name | kind | unit | better | event | dimension sets | target |",
                "|---|---|---|---|---|---|---|---|---|"]
        for indicator in family.indicators:
            target = "" if indicator.target is None else f"{indicator.target.value} (warn {indicator.target.warn})"
            out.append("| " + " | ".join(_cell(x) for x in (
                indicator.id, indicator.names.ru, indicator.names.en, indicator.kind, indicator.unit,
                {None: "", True: "↑", False: "↓"}[indicator.higher_is_better], indicator.event,
                ", ".join(s.name for s in family.sets_of(indicator)), target)) + " |")
        out.append("")
        out += [f"<details><summary>Definitions of {family.name}</summary>", ""]
        for indicator in family.indicators:
            out.append(f"- **{indicator.id}**: {_cell(catalog.render(indicator.description))}")
        out += ["", "</details>", ""]
    out += ["## Dimensions", "", "| id | название | name | reference |", "|---|---|---|---|"]
    for name, dimension in catalog.dimensions.items():
        out.append(f"| {name} | {dimension.names.ru} | {dimension.names.en} | {dimension.reference or ''} |")
    out += ["", "## Parameters (definitions that differ between vendors)", "",
            "| parameter | value | meaning |", "|---|---|---|"]
    for name, parameter in catalog.parameters.items():
        out.append(f"| {name} | {_cell(parameter.value)} | {_cell(parameter.description)} |")
    return "\n".join(out) + "\n"

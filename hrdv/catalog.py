"""The KPI catalog: indicators declared in catalog/*.yaml, validated on load.

An analyst extends the catalog without Python: one entry per indicator in its family's file
(interactions, work orders, claims, operators). Each family names its staged entity, how its rows
fall into a period (`events`), how it reaches reference attributes as they were at the event's
time (`joins`, `dimensions`) and named groups of dimension sets; each indicator names its kind,
event, filter and measure in SQL over those aliases. hrdv.catalog_sql turns the catalog into the
marts' SQL. A malformed file stops the load with an error naming the file, the entry and the field.

Pure Python (no Dagster): the CLI, the docs generator and the assets all load it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hrdv import entities
from hrdv.settings import REPO_ROOT

CATALOG_DIR = REPO_ROOT / "catalog"
IDENTIFIER = r"^[a-z][a-z0-9_]*$"
TOTAL = "total"  # the dimension set with no dimension: one row per period

Kind = Literal["count", "sum", "average", "ratio", "deadline", "percentile", "distinct", "per_distinct",
               "rate", "snapshot"]
# How each kind's value comes back at a coarser grain: from the windows' parts (additive), from
# the period's last window (snapshots), or recomputed from the period's rows.
ROLL_UP: dict[str, str] = {
    "count": "parts", "sum": "parts", "average": "parts", "ratio": "parts", "deadline": "parts",
    "rate": "parts", "snapshot": "last", "percentile": "rows", "distinct": "rows", "per_distinct": "rows",
}
KIND_TEXT: dict[str, str] = {
    "count": "number of event rows", "sum": "sum of a measure", "average": "mean of a measure",
    "ratio": "share of rows (or weight) meeting a condition", "deadline": "share done by the deadline",
    "percentile": "quantile of a measure", "distinct": "distinct values", "per_distinct":
    "rows per distinct value", "rate": "rows per N of a base population", "snapshot": "state at period end",
}


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file, the entry and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Names(Strict):
    ru: str = Field(min_length=1)
    en: str = Field(min_length=1)


class Target(Strict):
    """A value to colour against: on target, past `warn` (amber), beyond (red)."""
    value: float
    warn: float | None = None


class Dimension(Strict):
    names: Names
    reference: str | None = None  # the staged entity whose key every value must be
    within: str | None = None  # the coarser dimension a value belongs to (a branch's region), for reports
    within_key: str | None = None  # the reference's column holding that coarser key (region_code)
    labels: dict[str, str] = {}  # Russian names of the values of a dimension without a reference

    @field_validator("reference")
    @classmethod
    def _known_entity(cls, name: str | None) -> str | None:
        if name is not None:
            entities.entity(name)
        return name


class Parameter(Strict):
    value: Any
    description: str = Field(min_length=1)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _a_choice(self) -> Parameter:
        if self.choices is not None and self.value not in self.choices:
            raise ValueError(f"value {self.value!r} is not one of {self.choices}")
        return self


class Join(Strict):
    entity: str
    key: str = Field(min_length=1, description="SQL giving the referenced row's key")
    as_of: bool = False  # the version valid at the family's as_of moment, from staging.<entity>_history

    @model_validator(mode="after")
    def _entity_fits(self) -> Join:
        referenced = entities.entity(self.entity)
        if self.as_of and not referenced.keeps_history:
            raise ValueError(f"as_of needs a history, and {self.entity} keeps none "
                             f"(entities with one: {', '.join(e.name for e in entities.ENTITIES if e.keeps_history)})")
        return self


Columns = Annotated[list[str], Field(min_length=1)]


class OpenSpan(Strict):
    from_: str = Field(alias="from")
    until: Columns


class OverlapSpan(Strict):
    from_: str = Field(alias="from")
    until: str


class Event(Strict):
    """How a family's rows fall into a period. Exactly one of:
    time: rows whose column (or the first non-null of a list) lies in the period;
    open: rows begun before the period's end and not ended by it (a snapshot at the end);
    overlap: state intervals overlapping the period (at most max_state_hours long)."""
    time: str | Columns | None = None
    open: OpenSpan | None = None
    overlap: OverlapSpan | None = None

    @model_validator(mode="after")
    def _one(self) -> Event:
        if sum(x is not None for x in (self.time, self.open, self.overlap)) != 1:
            raise ValueError("give exactly one of time, open, overlap")
        return self

    @property
    def shape(self) -> str:
        return "time" if self.time is not None else "open" if self.open is not None else "overlap"

    @property
    def times(self) -> list[str]:
        return [self.time] if isinstance(self.time, str) else list(self.time or [])

    @property
    def columns(self) -> list[str]:
        if self.open:
            return [self.open.from_, *self.open.until]
        if self.overlap:
            return [self.overlap.from_, self.overlap.until]
        return self.times


class Indicator(Strict):
    id: str = Field(pattern=IDENTIFIER)
    names: Names
    description: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    higher_is_better: bool | None = None
    kind: Kind
    event: str
    dimensions: str | list[str]  # a group of the family's dimension_sets, or sets written out
    filter: str | None = None  # which event rows count at all
    measure: str | None = None  # sum, average, percentile; the value counted by distinct kinds
    condition: str | None = None  # ratio's numerator; snapshot ratio's numerator
    weight: str | None = None  # ratio: what each row weighs (default 1), e.g. seconds
    numerator_weight: str | None = None  # ratio: if the numerator weighs otherwise
    quantile: float | None = Field(default=None, gt=0, lt=1)
    done: str | None = None  # deadline: when it was done
    due: str | None = None  # deadline: by when it was due
    per: int | None = Field(default=None, gt=0)  # rate: per how many of the base
    base: str | None = None  # rate: the base population (bases in the family's file)
    aggregate: Literal["count", "average", "ratio"] | None = None  # snapshot: of the open rows
    target: Target | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Indicator:
        needs = {
            "sum": ["measure"], "average": ["measure"], "percentile": ["measure", "quantile"],
            "distinct": ["measure"], "per_distinct": ["measure"], "ratio": ["condition"],
            "deadline": ["done", "due"], "rate": ["per", "base"], "snapshot": ["aggregate"],
        }.get(self.kind, [])
        if self.kind == "snapshot" and self.aggregate == "average":
            needs = [*needs, "measure"]
        if self.kind == "snapshot" and self.aggregate == "ratio":
            needs = [*needs, "condition"]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"kind {self.kind} needs {', '.join(missing)}")
        return self

    @property
    def roll_up(self) -> str:
        return ROLL_UP[self.kind]


class Balance(Strict):
    """backlog(W) = backlog(W - 1) + inflow(W) - outflow(W), for the family's total: a blocking
    rule before publication. Reopenings and deletes keep it (the figures all read the rows' current
    state); a late change that breaks it for an earlier window recomputes that window."""
    backlog: str
    inflow: list[str] = Field(min_length=1)
    outflow: list[str] = Field(min_length=1)


class FamilyFile(Strict):
    family: str = Field(pattern=IDENTIFIER)
    entity: str
    names: Names
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    joins: dict[str, Join] = {}
    # The row's moment whose versions the as_of joins read: one per row, so a contact is reported
    # under the same customer segment and skill group in every mart it appears in.
    as_of: str | None = None
    dimensions: dict[str, str]
    dimension_sets: dict[str, list[str]]
    events: dict[str, Event]
    indexes: list[str] = []  # extra staging indexes its SQL needs, e.g. "(customer_id, created_at)"
    balances: list[Balance] = []
    indicators: list[Indicator] = Field(min_length=1)

    @field_validator("entity")
    @classmethod
    def _known_entity(cls, name: str) -> str:
        entities.entity(name)
        return name

    @model_validator(mode="after")
    def _as_of_column(self) -> FamilyFile:
        staged = {c.name for c in entities.entity(self.entity).staged}
        if self.as_of is None and any(join.as_of for join in self.joins.values()):
            raise ValueError("as_of: give the row's column whose moment the as_of joins read, e.g. created_at")
        if self.as_of is not None and self.as_of not in staged:
            raise ValueError(f"as_of: {self.as_of} is not a column of {self.entity} "
                             f"(columns: {', '.join(sorted(staged))})")
        return self


class DimensionsFile(Strict):
    dimensions: dict[str, Dimension]


class ParametersFile(Strict):
    parameters: dict[str, Parameter]


class Base(Strict):
    """A population indicators are rated against (rate kind): counted at the period's end."""
    entity: str
    description: str
    filter: str | None = None
    dimensions: dict[str, str]
    refresh_minutes: int = Field(default=60, ge=0)  # recounted by a publication when older
    joins: str | None = None  # SQL after FROM staging.<entity> AS c, e.g. a LEFT JOIN of regions


class BasesFile(Strict):
    bases: dict[str, Base]


class Usual(Strict):
    """How a series' usual range at a period is computed (catalog/bottlenecks.yaml explains)."""
    weeks: int = Field(ge=1)
    min_points: int = Field(ge=1)
    k: float = Field(gt=0)
    min_spread: float = Field(ge=0)


class Bottleneck(Strict):
    id: str = Field(pattern=IDENTIFIER)
    names: Names
    family: str
    indicator: str
    dimension_set: str


class BottlenecksFile(Strict):
    usual: Usual
    bottlenecks: list[Bottleneck]


# --- the loaded catalog -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DimensionSet:
    """A combination of dimensions an indicator is cut by, e.g. channel+region; () is `total`."""
    dimensions: tuple[str, ...]

    @property
    def name(self) -> str:
        return "+".join(self.dimensions) or TOTAL

    @classmethod
    def parse(cls, text: str) -> DimensionSet:
        return cls(() if text == TOTAL else tuple(text.split("+")))


@dataclass(frozen=True)
class Series:
    family: str
    indicator: Indicator
    dimension_set: DimensionSet

    @property
    def id(self) -> str:
        return f"{self.indicator.id}:{self.dimension_set.name}"


@dataclass(frozen=True)
class Family:
    spec: FamilyFile
    path: Path

    @property
    def name(self) -> str:
        return self.spec.family

    @property
    def entity(self) -> entities.Entity:
        return entities.entity(self.spec.entity)

    @property
    def indicators(self) -> list[Indicator]:
        return self.spec.indicators

    def sets_of(self, indicator: Indicator) -> list[DimensionSet]:
        listed = indicator.dimensions
        texts = self.spec.dimension_sets[listed] if isinstance(listed, str) else listed
        return [DimensionSet.parse(text) for text in texts]

    @cached_property
    def dimension_sets(self) -> list[DimensionSet]:
        """Every set any indicator of the family is cut by, in first-use order."""
        seen: dict[DimensionSet, None] = {}
        for indicator in self.indicators:
            for dimension_set in self.sets_of(indicator):
                seen.setdefault(dimension_set, None)
        return list(seen)

    @cached_property
    def used_dimensions(self) -> list[str]:
        return sorted({d for s in self.dimension_sets for d in s.dimensions})


@dataclass(frozen=True)
class Catalog:
    families: dict[str, Family]
    dimensions: dict[str, Dimension]
    parameters: dict[str, Parameter]
    bases: dict[str, Base]
    bottlenecks: BottlenecksFile

    @property
    def indicators(self) -> Iterator[tuple[Family, Indicator]]:
        for family in self.families.values():
            for indicator in family.indicators:
                yield family, indicator

    @cached_property
    def series(self) -> list[Series]:
        return [Series(family.name, indicator, dimension_set)
                for family, indicator in self.indicators for dimension_set in family.sets_of(indicator)]

    def within(self, dimensions: Iterable[str]) -> frozenset[str]:
        """The dimensions and every coarser one each lies within (a branch: its region, its federal
        district), from dimensions.yaml's `within`."""
        out = set()
        for name in dimensions:
            while name is not None:
                out.add(name)
                name = self.dimensions[name].within
        return frozenset(out)

    def indicator(self, indicator_id: str) -> tuple[Family, Indicator]:
        for family, indicator in self.indicators:
            if indicator.id == indicator_id:
                return family, indicator
        raise CatalogError(f"no indicator {indicator_id!r} in the catalog; `hrdv catalog` lists them")

    def render(self, text: str | None, **extra: Any) -> str | None:
        """An SQL fragment or description with the parameters ({{ name }}) filled in."""
        if text is None or "{" not in text:
            return text
        values = {name: p.value for name, p in self.parameters.items()} | extra
        return _JINJA.from_string(text).render(**values)


_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
SPECIAL = {"dimensions.yaml", "parameters.yaml", "bases.yaml", "bottlenecks.yaml"}


@lru_cache(maxsize=1)
def default() -> Catalog:
    """The repository's catalog, loaded once per process."""
    return load()


def load(directory: Path = CATALOG_DIR) -> Catalog:
    """Load and check the whole catalog; CatalogError names the file, entry and field at fault."""
    dimensions = _read(directory / "dimensions.yaml", DimensionsFile).dimensions
    parameters = _read(directory / "parameters.yaml", ParametersFile).parameters
    bases = _read(directory / "bases.yaml", BasesFile).bases
    bottlenecks = _read(directory / "bottlenecks.yaml", BottlenecksFile)
    families: dict[str, Family] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name in SPECIAL:
            continue
        family = Family(_read(path, FamilyFile), path)
        if family.name in families:
            raise CatalogError(f"{path.name}: family {family.name!r} is also defined in "
                               f"{families[family.name].path.name}")
        families[family.name] = family
    catalog = Catalog(families, dimensions, parameters, bases, bottlenecks)
    _check_references(catalog)
    _check_bottlenecks(catalog)
    return catalog


def _read(path: Path, model: type[BaseModel]) -> Any:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: the catalog file is missing") from None
    except yaml.YAMLError as error:
        raise CatalogError(f"{path.name}: not valid YAML: {error}") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise CatalogError(_describe(path, data, error)) from None


def _describe(path: Path, data: Any, error: ValidationError) -> str:
    lines = [f"{path.name}: {error.error_count()} error(s) in the catalog"]
    for item in error.errors():
        location = list(item["loc"])
        where = _entry_name(data, location)
        field = ".".join(str(part) for part in location)
        lines.append(f"  {path.name}: {where}field {field}: {item['msg']}")
    return "\n".join(lines)


def _entry_name(data: Any, location: list) -> str:
    """'entry <id>, ' for a location inside a list of entries that have an id."""
    node = data
    for part in location:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            return f"entry {node['id']!r}, "
    return ""


ALIAS = re.compile(r"\b([a-z_][a-z0-9_]*)\.[a-z_]")


def _check_references(catalog: Catalog) -> None:
    """What pydantic cannot see alone: names that must exist elsewhere in the catalog."""
    ids: dict[str, str] = {}
    for family in catalog.families.values():
        spec, where = family.spec, family.path.name
        columns = {c.name for c in family.entity.staged}
        for name, event in spec.events.items():
            unknown = [c for c in event.columns if c not in columns]
            if unknown:
                raise CatalogError(f"{where}: event {name!r}: {family.entity.name} has no staged column(s) "
                                   f"{unknown}")
        for name in spec.dimensions:
            if name not in catalog.dimensions:
                raise CatalogError(f"{where}: field dimensions.{name}: not a dimension of dimensions.yaml "
                                   f"(known: {', '.join(catalog.dimensions)})")
        for group, texts in spec.dimension_sets.items():
            _check_sets(where, f"dimension_sets.{group}", texts, spec.dimensions)
        known = {i.id: i for i in spec.indicators}
        for balance in spec.balances:
            for name in (balance.backlog, *balance.inflow, *balance.outflow):
                if name not in known:
                    raise CatalogError(f"{where}: field balances: {name!r} is not an indicator of this family")
            if known[balance.backlog].kind != "snapshot":
                raise CatalogError(f"{where}: field balances: backlog {balance.backlog!r} must be a snapshot")
        for indicator in spec.indicators:
            entry = f"{where}: entry {indicator.id!r}"
            if indicator.id in ids:
                raise CatalogError(f"{entry}: field id: {indicator.id!r} is also in {ids[indicator.id]}")
            ids[indicator.id] = where
            if indicator.event not in spec.events:
                raise CatalogError(f"{entry}: field event: {indicator.event!r} is not one of "
                                   f"{', '.join(spec.events)}")
            shape = spec.events[indicator.event].shape
            if (indicator.kind == "snapshot") != (shape == "open"):
                raise CatalogError(f"{entry}: field event: a snapshot reads an `open` event and only a "
                                   f"snapshot does; {indicator.event!r} is a {shape} event")
            if isinstance(indicator.dimensions, str):
                if indicator.dimensions not in spec.dimension_sets:
                    raise CatalogError(f"{entry}: field dimensions: no group {indicator.dimensions!r} in "
                                       f"dimension_sets ({', '.join(spec.dimension_sets)})")
            else:
                _check_sets(entry, "dimensions", indicator.dimensions, spec.dimensions)
            if indicator.kind == "rate":
                _check_rate(catalog, family, indicator, entry)
            for name in ("filter", "measure", "condition", "weight", "numerator_weight", "done", "due"):
                text = getattr(indicator, name)
                if text is None:
                    continue
                try:
                    rendered = catalog.render(text, clipped_s="0")
                except jinja2.TemplateError as error:
                    raise CatalogError(f"{entry}: field {name}: {error}") from None
                aliases = set(ALIAS.findall(rendered)) - {"f", "p", "staging", "prior"} - set(spec.joins)
                if aliases:
                    raise CatalogError(f"{entry}: field {name}: unknown alias(es) {sorted(aliases)}; "
                                       f"use f (the row), p (the period) or a join ({', '.join(spec.joins)})")


def _check_bottlenecks(catalog: Catalog) -> None:
    for entry in catalog.bottlenecks.bottlenecks:
        where = f"bottlenecks.yaml: entry {entry.id!r}"
        family = catalog.families.get(entry.family)
        if family is None:
            raise CatalogError(f"{where}: field family: {entry.family!r} is not one of {', '.join(catalog.families)}")
        indicator = next((i for i in family.indicators if i.id == entry.indicator), None)
        if indicator is None:
            raise CatalogError(f"{where}: field indicator: {entry.indicator!r} is not an indicator of {entry.family}")
        sets = [s.name for s in family.sets_of(indicator)]
        if entry.dimension_set not in sets:
            raise CatalogError(f"{where}: field dimension_set: {entry.indicator} is not cut by "
                               f"{entry.dimension_set!r} ({', '.join(sets)})")


def _check_sets(where: str, field: str, texts: list[str], dimensions: dict[str, str]) -> None:
    for text in texts:
        unknown = [d for d in DimensionSet.parse(text).dimensions if d not in dimensions]
        if unknown:
            raise CatalogError(f"{where}: field {field}: set {text!r} names {unknown}, not among this "
                               f"family's dimensions ({', '.join(dimensions)})")


def _check_rate(catalog: Catalog, family: Family, indicator: Indicator, entry: str) -> None:
    base = catalog.bases.get(indicator.base or "")
    if base is None:
        raise CatalogError(f"{entry}: field base: {indicator.base!r} is not in bases.yaml "
                           f"({', '.join(catalog.bases)})")
    for dimension_set in family.sets_of(indicator):
        missing = [d for d in dimension_set.dimensions if d not in base.dimensions]
        if missing:
            raise CatalogError(f"{entry}: field dimensions: base {indicator.base!r} cannot be cut by {missing}")

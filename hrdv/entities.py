"""Every CRM entity HRDV captures, described once.

From an Entity come: the tables Debezium captures (publication, grants, table.include.list and the
columns it must never capture), the ClickHouse parsing chain and buffer (hrdv/schema_gen.py), the
ingestor's topic map, the window query, the staging table with its LSN-guarded upsert and, for
reference entities whose past matters to a report, the validity history (staging.<name>_history),
the late-window rule, and the Dagster assets with their checks (hrdv_assets/). Pure Python, no
Dagster: the ingestor and the stack scripts import it too.

Adding an entity is one Entity in ENTITIES (and its tests); an entity that really differs says so
in its own module (hrdv_assets/interactions.py keeps its mart-specific late-window rule).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# PostgreSQL type -> (ClickHouse type, JSON type Debezium writes for it). numeric arrives as a
# string (decimal.handling.mode = string), jsonb as its text.
_CH_TYPES = {
    "bigint": "Int64",
    "integer": "Int32",
    "smallint": "Int16",
    "text": "String",
    "jsonb": "String",
    "boolean": "Bool",
    "timestamptz": "DateTime64(6, 'UTC')",
}
_INT_RANGES = {"integer": (-(1 << 31), (1 << 31) - 1), "smallint": (-(1 << 15), (1 << 15) - 1)}
_NUMERIC = re.compile(r"numeric\((\d+), ?(\d+)\)")


@dataclass(frozen=True)
class Column:
    """One CRM column as HRDV sees it."""

    name: str
    type: str  # the CRM's PostgreSQL type: bigint, integer, smallint, text, jsonb, boolean, timestamptz, numeric(p, s)
    description: str = ""
    # Free text (names, subjects, JSON): stored plainly, not as a dictionary-encoded code, and
    # large enough to be TOASTed, so an update that leaves it untouched sends Debezium's placeholder.
    free_text: bool = False
    # Personal data (names, phones, e-mails of customers and their contacts): never captured;
    # Debezium drops the column at the source (column.exclude.list), so no HRDV store holds it.
    personal: bool = False
    # The CRM column's DEFAULT, for a column the CRM added with one (an SQL literal that PostgreSQL
    # and ClickHouse read alike, e.g. '0'). PostgreSQL shows rows written before the column with
    # that value without rewriting them, so they send no change; HRDV gives it likewise to what it
    # holds from before: events without the column (parsed or buffered before it), and staged rows
    # when staging gains the column. Otherwise those rows would stay NULL where the CRM says 0.
    default: str | None = None

    def __post_init__(self) -> None:
        if self.type not in _CH_TYPES and not _NUMERIC.fullmatch(self.type):
            raise ValueError(f"column {self.name}: unsupported type {self.type!r} "
                             f"(expected one of {sorted(_CH_TYPES)} or numeric(p, s))")

    @property
    def clickhouse_type(self) -> str:
        """The buffer's type (always Nullable: a delete carries the key alone)."""
        numeric = _NUMERIC.fullmatch(self.type)
        base = f"Decimal({numeric[1]}, {numeric[2]})" if numeric else _CH_TYPES[self.type]
        if self.type == "text" and not self.free_text:
            return f"LowCardinality(Nullable({base}))"
        return f"Nullable({base})"

    @property
    def value_type(self) -> str:
        """The type JSONExtract reads (the buffer's, without dictionary encoding)."""
        return self.clickhouse_type.replace("LowCardinality(", "", 1)[:-1] if self.clickhouse_type.startswith(
            "LowCardinality(") else self.clickhouse_type

    @property
    def toastable(self) -> bool:
        """Can an unchanged value arrive as Debezium's placeholder? (text/jsonb: TOASTed when large)"""
        return self.type in ("text", "jsonb") and (self.free_text or self.type == "jsonb")

    @property
    def staging_type(self) -> str:
        """The column's type in staging: the CRM's, except jsonb, kept as the text Debezium sent
        (an unresolved TOAST placeholder must be storable; reports cast it)."""
        return "text" if self.type == "jsonb" else self.type

    @property
    def int_range(self) -> tuple[int, int] | None:
        return _INT_RANGES.get(self.type)

    @property
    def numeric_precision(self) -> int | None:
        numeric = _NUMERIC.fullmatch(self.type)
        return int(numeric[1]) if numeric else None

    @property
    def numeric_scale(self) -> int | None:
        numeric = _NUMERIC.fullmatch(self.type)
        return int(numeric[2]) if numeric else None


@dataclass(frozen=True)
class Entity:
    """A CRM table captured into HRDV. Facts keep their latest state; reference entities with
    `history` keep every version in staging.<name>_history as well."""

    name: str  # CRM table public.<name>, Kafka topic <prefix>.public.<name>, buffer, staging table
    title: str  # what it is, in the managers' words (Russian) and in English
    key: str  # the primary key column (its first column)
    columns: tuple[Column, ...]
    kind: str = "fact"  # fact | reference
    # Status values the marts know; others warn (check statuses_known). Empty: no status column.
    statuses: tuple[str, ...] = ()
    status_column: str = "status"  # the column holding them
    # Business timestamps that place a row in reporting windows: a change to one of them (or a
    # new, deleted or re-dimensioned row) alters the windows of its old and new values.
    lifecycle: tuple[str, ...] = ()
    # Columns a mart cuts by: changing one moves the row between cells of every lifecycle window.
    dimensions: tuple[str, ...] = ()
    # Attributes whose value at the time of an event matters to a report. Non-empty: staging keeps
    # a validity history (valid_from / valid_to by commit time and LSN, current row flagged).
    history: tuple[str, ...] = ()
    # The column the CRM's application sets on every change (the drift check's commit time for
    # rows committed before the CRM tracked commit timestamps); None where the table has none.
    changed_at: str | None = None
    owner: str = "team:hrdv-data-engineering"

    def __post_init__(self) -> None:
        names = [column.name for column in self.columns]
        if names[0] != self.key:
            raise ValueError(f"{self.name}: the key column {self.key} must come first, got {names[0]}")
        unknown = [c for c in (*self.lifecycle, *self.dimensions, *self.history,
                               *([self.changed_at] if self.changed_at else [])) if c not in names]
        if unknown:
            raise ValueError(f"{self.name}: lifecycle/dimensions/history/changed_at name unknown columns {unknown}")
        if self.statuses and self.status_column not in names:
            raise ValueError(f"{self.name}: statuses given but no column {self.status_column}")
        if self.kind not in ("fact", "reference"):
            raise ValueError(f"{self.name}: kind must be fact or reference, got {self.kind!r}")
        if any(c.personal for c in self.columns if c.name == self.key):
            raise ValueError(f"{self.name}: the key cannot be personal data")

    @property
    def staged(self) -> tuple[Column, ...]:
        """The columns HRDV receives and stages: every column but personal data."""
        return tuple(column for column in self.columns if not column.personal)

    @property
    def personal(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.personal)

    @property
    def key_column(self) -> Column:
        return self.columns[0]

    @property
    def key_is_integer(self) -> bool:
        return self.key_column.type in ("bigint", "integer", "smallint")

    @property
    def has_status(self) -> bool:
        return bool(self.statuses) and any(column.name == self.status_column for column in self.staged)

    @property
    def keeps_history(self) -> bool:
        return bool(self.history)

    @property
    def table(self) -> str:
        return f"public.{self.name}"


def _c(name: str, type_: str, description: str = "", **flags: object) -> Column:
    return Column(name, type_, description, **flags)


TS = "timestamptz"

# ---- territories (федеральные округа -> субъекты -> филиалы -> участки) -------------------------
FEDERAL_DISTRICTS = Entity(
    "federal_districts", "Федеральные округа / federal districts", "code",
    (_c("code", "text", "CFO, SZFO, ..."), _c("name", "text", free_text=True)),
    kind="reference",
)
REGIONS = Entity(
    "regions", "Субъекты РФ / federal subjects", "code",
    (_c("code", "text", "ISO 3166-2, e.g. RU-MOW"), _c("name", "text", free_text=True),
     _c("utc_offset", "smallint", "hours"), _c("federal_district_code", "text"),
     _c("population_thousands", "integer")),
    kind="reference",
)
BRANCHES = Entity(
    "branches", "Филиалы / branches", "code",
    (_c("code", "text", "e.g. RU-MOW-B1"), _c("name", "text", free_text=True), _c("region_code", "text")),
    kind="reference", history=("name", "region_code"),
)
SERVICE_AREAS = Entity(
    "service_areas", "Участки обслуживания / engineers' service areas", "code",
    (_c("code", "text", "e.g. RU-MOW-B1-S2"), _c("name", "text", free_text=True), _c("branch_code", "text")),
    kind="reference", history=("name", "branch_code"),
)
# ---- catalogues -------------------------------------------------------------------------------
CHANNELS = Entity(
    "channels", "Каналы / contact channels", "code",
    (_c("code", "text", "call, chat, web, ..."), _c("name", "text", free_text=True)),
    kind="reference",
)
TOPICS = Entity(
    "topics", "Тематики / contact topics (a tree)", "code",
    (_c("code", "text"), _c("name", "text", free_text=True), _c("parent_code", "text", "parent topic")),
    kind="reference",
)
QUEUES = Entity(
    "queues", "Очереди / queues (operators' skill groups)", "code",
    (_c("code", "text"), _c("name", "text", free_text=True), _c("channel_code", "text"),
     _c("skill_group", "text"), _c("routing_rule", "jsonb", "channels and parent topics served")),
    kind="reference", history=("name", "channel_code", "skill_group", "routing_rule"),
)
TARIFFS = Entity(
    "tariffs", "Тарифы / tariff plans", "code",
    (_c("code", "text"), _c("name", "text", free_text=True), _c("includes_internet", "boolean"),
     _c("includes_tv", "boolean"), _c("includes_mobile", "boolean"), _c("monthly_fee", "numeric(10, 2)")),
    kind="reference",
)
# ---- customers and staff ----------------------------------------------------------------------
CUSTOMERS = Entity(
    "customers", "Клиенты / customers (B2C subscribers)", "id",
    (_c("id", "bigint", "CRM customer id"), _c("full_name", "text", personal=True),
     _c("region_code", "text"), _c("segment", "text", "B2C, VIP, ..."), _c("registered_at", TS),
     _c("branch_code", "text"), _c("tariff_code", "text"), _c("status", "text")),
    kind="reference", statuses=("active", "suspended", "closed"),
    history=("branch_code", "tariff_code", "status", "segment", "region_code"),
)
CONTACT_PERSONS = Entity(
    "contact_persons", "Контактные лица / customers' contact persons", "id",
    (_c("id", "bigint"), _c("customer_id", "bigint"), _c("full_name", "text", personal=True),
     _c("phone", "text", personal=True), _c("email", "text", personal=True),
     _c("consent_sms", "boolean"), _c("consent_email", "boolean"), _c("is_primary", "boolean")),
    kind="reference",
)
EMPLOYEES = Entity(
    "employees", "Сотрудники / employees: operators and field engineers", "id",
    (_c("id", "bigint"), _c("full_name", "text", "shown on operators' reports", free_text=True),
     _c("role", "text", "operator or engineer"), _c("site", "text", "operators' contact-centre site"),
     _c("skill_group", "text", "operators' queue skill group"), _c("region_code", "text"),
     _c("service_area_code", "text", "engineers' service area"), _c("specialisation", "text"),
     _c("shift", "text", "day, evening, night"), _c("hired_at", TS)),
    kind="reference", history=("role", "site", "skill_group", "region_code", "service_area_code", "shift"),
)
# ---- facts ------------------------------------------------------------------------------------
INTERACTIONS = Entity(
    "interactions", "Обращения / customer interactions (calls, chats, web requests)", "id",
    (_c("id", "bigint", "CRM interaction id"), _c("customer_id", "bigint"),
     _c("channel_code", "text", "call, chat, web ..."), _c("region_code", "text", "federal subject, e.g. RU-MOW"),
     _c("topic_code", "text"), _c("queue_code", "text"), _c("direction", "text"),
     _c("status", "text", "new, assigned, in_progress / in_work, closed, reopened, abandoned"),
     _c("operator_id", "integer"), _c("subject", "text", free_text=True),
     _c("channel_detail", "text", "sub-channel (CRM migration 001)", free_text=True),
     _c("created_at", TS), _c("first_response_at", TS), _c("closed_at", TS),
     _c("resolved_on_first_contact", "boolean"), _c("updated_at", TS),
     _c("previous_interaction_id", "bigint", "the contact this one repeats"),
     _c("reopen_count", "integer"), _c("sla_due_at", TS, "answer due by"),
     _c("abandoned_at", TS, "when the customer left the queue before any operator answered "
                            "(status abandoned); NULL unless abandoned"),
     _c("transfer_count", "integer", "times transferred to another queue of its channel after being "
                                     "answered (queue_code is the last one)", default="0")),
    # The lifecycle new -> assigned -> in_progress -> closed (-> reopened), and 'in_work', the
    # name CRM migration 001 gives in_progress (rows staged before it keep the old name); a call
    # or chat whose customer hangs up in the queue goes new -> abandoned, for good.
    statuses=("new", "assigned", "in_progress", "in_work", "closed", "reopened", "abandoned"),
    lifecycle=("created_at", "closed_at", "abandoned_at"), dimensions=("channel_code", "region_code"),
    changed_at="updated_at",
)
WORK_ORDERS = Entity(
    "work_orders", "Задания / engineers' work orders", "id",
    (_c("id", "bigint"), _c("interaction_id", "bigint"), _c("customer_id", "bigint"),
     _c("type", "text", "repair, installation, ..."), _c("priority", "smallint", "1 = most urgent"),
     _c("service_area_code", "text"), _c("engineer_id", "bigint"), _c("status", "text"),
     _c("sla_due_at", TS), _c("created_at", TS), _c("assigned_at", TS), _c("completed_at", TS),
     _c("cancelled_at", TS), _c("reassign_count", "integer"), _c("postpone_count", "integer"),
     _c("updated_at", TS)),
    statuses=("new", "assigned", "in_progress", "postponed", "done", "cancelled"),
    lifecycle=("created_at", "assigned_at", "completed_at", "cancelled_at"),
    dimensions=("type", "priority", "service_area_code", "engineer_id"),
    changed_at="updated_at",
)
CLAIMS = Entity(
    "claims", "Претензии / formal claims with a regulatory deadline", "id",
    (_c("id", "bigint"), _c("customer_id", "bigint"), _c("interaction_id", "bigint"),
     _c("category", "text"), _c("amount_claimed", "numeric(12, 2)"), _c("regulatory_due_at", TS),
     _c("status", "text"), _c("outcome", "text"), _c("created_at", TS), _c("resolved_at", TS),
     _c("updated_at", TS)),
    statuses=("registered", "in_review", "resolved", "rejected"),
    lifecycle=("created_at", "resolved_at"), dimensions=("category", "outcome"),
    changed_at="updated_at",
)

OPERATOR_STATES = Entity(
    "operator_states", "Рабочие состояния операторов / operators' working states", "id",
    (_c("id", "bigint"), _c("employee_id", "bigint", "the operator"),
     _c("state", "text", "logged_in, ready, busy, after_call_work, break, logged_out"),
     _c("started_at", TS), _c("ended_at", TS, "NULL while current"),
     _c("interaction_id", "bigint", "the contact handled while busy or in after-call work"),
     _c("updated_at", TS)),
    # One row per state interval: occupancy and operator load are sums of its durations.
    statuses=("logged_in", "ready", "busy", "after_call_work", "break", "logged_out"), status_column="state",
    lifecycle=("started_at", "ended_at"), dimensions=("employee_id", "state"),
    changed_at="updated_at",
)

ENTITIES: tuple[Entity, ...] = (
    FEDERAL_DISTRICTS, REGIONS, BRANCHES, SERVICE_AREAS, CHANNELS, TOPICS, QUEUES, TARIFFS,
    CUSTOMERS, CONTACT_PERSONS, EMPLOYEES, INTERACTIONS, WORK_ORDERS, CLAIMS, OPERATOR_STATES,
)
BY_NAME: dict[str, Entity] = {entity.name: entity for entity in ENTITIES}
HEARTBEAT_TABLE = "debezium_heartbeat"  # captured too: Debezium's heartbeat.action.query writes it


def entity(name: str) -> Entity:
    """The entity called `name`; ValueError listing the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown entity {name!r}; expected one of {', '.join(BY_NAME)}") from None


def captured_tables() -> list[str]:
    """Every table Debezium captures, schema-qualified: the entities and the heartbeat table."""
    return [entity.table for entity in ENTITIES] + [f"public.{HEARTBEAT_TABLE}"]


def excluded_columns() -> list[str]:
    """Personal-data columns Debezium must drop at the source (column.exclude.list)."""
    return [f"{entity.table}.{name}" for entity in ENTITIES for name in entity.personal]

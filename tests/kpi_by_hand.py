"""Indicators computed by hand in pandas, straight from the CRM's tables, from their definitions as
a manager reads them: nothing here is generated from the catalog. Used to check the generated mart
SQL for at least one indicator of every kind and every dimension set.

Each function returns {(period_start, dimension values...): value} for one dimension set, over
the periods given (a list of (start, end)); a key exists when at least one row counts.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg

TARGET_S = {"call": 20, "chat": 60}  # catalog/parameters.yaml defaults, written again on purpose
SHORT_ABANDON_S = 5


def read(conn: psycopg.Connection, query: str) -> pd.DataFrame:
    cur = conn.execute(query)
    frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    for column in frame.columns:
        if column.endswith("_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _text(series: pd.Series) -> pd.Series:
    return series.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


class Crm:
    """The CRM's rows with each dimension a manager cuts by, joined by hand."""

    def __init__(self, dsn: str) -> None:
        with psycopg.connect(dsn) as conn:
            regions = read(conn, "SELECT code AS region_code, federal_district_code FROM regions")
            topics = read(conn, "SELECT code AS topic_code, parent_code AS parent_topic FROM topics")
            queues = read(conn, "SELECT code AS queue_code, skill_group FROM queues")
            operators = read(conn, "SELECT id AS operator_id, site, skill_group AS operator_skill_group FROM employees")
            customers = read(conn, "SELECT id AS customer_id, region_code AS customer_region, segment, "
                                   "branch_code AS customer_branch, tariff_code, status AS customer_status FROM customers")
            self.customers = customers.merge(regions.rename(columns={"region_code": "customer_region",
                                                                     "federal_district_code": "customer_fd"}),
                                             on="customer_region", how="left")
            interactions = read(conn, "SELECT * FROM interactions")
            interactions = interactions.merge(regions, on="region_code", how="left") \
                .merge(topics, on="topic_code", how="left").merge(queues, on="queue_code", how="left") \
                .merge(operators, on="operator_id", how="left") \
                .merge(self.customers, on="customer_id", how="left")
            self.interactions = interactions.rename(columns={
                "channel_code": "channel", "region_code": "region", "federal_district_code": "federal_district",
                "customer_branch": "branch", "queue_code": "queue", "topic_code": "topic", "tariff_code": "tariff"})
            areas = read(conn, "SELECT code AS service_area_code, branch_code FROM service_areas")
            branches = read(conn, "SELECT code AS branch_code, region_code FROM branches")
            orders = read(conn, "SELECT * FROM work_orders").merge(areas, on="service_area_code", how="left") \
                .merge(branches, on="branch_code", how="left").merge(regions, on="region_code", how="left")
            self.work_orders = orders.rename(columns={
                "type": "work_order_type", "service_area_code": "service_area", "branch_code": "branch",
                "region_code": "region", "federal_district_code": "federal_district"})
            self.work_orders["priority"] = _text(self.work_orders["priority"])
            claims = read(conn, "SELECT * FROM claims").merge(self.customers, on="customer_id", how="left")
            self.claims = claims.rename(columns={
                "category": "claim_category", "outcome": "claim_outcome", "customer_region": "region",
                "customer_fd": "federal_district", "tariff_code": "tariff"})
            states = read(conn, "SELECT * FROM operator_states")
            staff = read(conn, "SELECT id AS employee_id, site, skill_group FROM employees")
            self.states = states.merge(staff, on="employee_id", how="left").rename(columns={"state": "operator_state"})


def _group(rows: pd.DataFrame, dims: list[str], periods: list[tuple[datetime, datetime]], time: str,
           aggregate: Callable[[pd.DataFrame], float]) -> dict[tuple, float]:
    """Rows falling in each period by `time`, grouped by `dims`, aggregated."""
    out = {}
    for start, end in periods:
        inside = rows[(rows[time] >= start) & (rows[time] < end)]
        out |= _by(inside, dims, start, aggregate)
    return out


def _by(rows: pd.DataFrame, dims: list[str], start: datetime, aggregate) -> dict[tuple, float]:
    if rows.empty:
        return {}
    if not dims:
        return {(start,): aggregate(rows)}
    frame = rows.copy()
    for d in dims:
        frame[d] = _text(frame[d])
    return {(start, *(k if isinstance(k, tuple) else (k,))): aggregate(g)
            for k, g in frame.groupby(dims, dropna=False)}


def _open_at(rows: pd.DataFrame, moment: datetime, begins: str, ends: list[str]) -> pd.DataFrame:
    still = rows[begins] < moment
    for column in ends:
        still &= rows[column].isna() | (rows[column] >= moment)
    return rows[still]


def _open_at_each_end(rows: pd.DataFrame, dims, periods, begins: str, ends: list[str]) -> dict[tuple, float]:
    """How many rows are open at the end of each period, grouped by `dims`."""
    out = {}
    for start, end in periods:
        out |= _by(_open_at(rows, end, begins, ends), dims, start, len)
    return out


# --- interactions ------------------------------------------------------------------------------------
def contacts_received(crm: Crm, dims, periods):
    return _group(crm.interactions, dims, periods, "created_at", len)


def first_response_time_p90(crm: Crm, dims, periods):
    rows = crm.interactions[crm.interactions["first_response_at"].notna()].copy()
    rows["wait_s"] = (rows["first_response_at"] - rows["created_at"]).dt.total_seconds()
    return _group(rows, dims, periods, "first_response_at", lambda g: g["wait_s"].quantile(0.9))


def customers_contacting(crm: Crm, dims, periods):
    return _group(crm.interactions, dims, periods, "created_at", lambda g: g["customer_id"].nunique())


def resolution_time_avg(crm: Crm, dims, periods):
    rows = crm.interactions.copy()
    rows["hours"] = (rows["closed_at"] - rows["created_at"]).dt.total_seconds() / 3600
    return _group(rows[rows["closed_at"].notna()], dims, periods, "closed_at", lambda g: g["hours"].mean())


def transfers(crm: Crm, dims, periods):
    return _group(crm.interactions[crm.interactions["closed_at"].notna()], dims, periods, "closed_at",
                  lambda g: float(g["transfer_count"].sum()))


def service_level(crm: Crm, dims, periods):
    """Answered within the target among offered calls and chats; abandons under 5 s left out,
    later ones missed (the catalog's default, Cisco's)."""
    rows = crm.interactions[crm.interactions["channel"].isin(["call", "chat"])].copy()
    rows["offered_at"] = rows["first_response_at"].fillna(rows["abandoned_at"])
    rows = rows[rows["offered_at"].notna()]
    short = rows["abandoned_at"].notna() & ((rows["abandoned_at"] - rows["created_at"]).dt.total_seconds() < SHORT_ABANDON_S)
    rows = rows[~short]
    target = rows["channel"].map(TARGET_S)
    rows["in_time"] = (rows["first_response_at"] - rows["created_at"]).dt.total_seconds() <= target
    return _group(rows, dims, periods, "offered_at", lambda g: g["in_time"].sum() / len(g))


def response_sla_compliance(crm: Crm, dims, periods):
    rows = crm.interactions[crm.interactions["first_response_at"].notna() & crm.interactions["sla_due_at"].notna()]
    return _group(rows, dims, periods, "first_response_at",
                  lambda g: (g["first_response_at"] <= g["sla_due_at"]).sum() / len(g))


def contacts_per_10k_customers(crm: Crm, dims, periods):
    active = crm.customers[crm.customers["customer_status"] == "active"].rename(
        columns={"customer_region": "region", "customer_fd": "federal_district", "customer_branch": "branch",
                 "tariff_code": "tariff"})
    population = ({(): len(active)} if not dims else
                  {(k if isinstance(k, tuple) else (k,)): len(g)
                   for k, g in active.assign(**{d: _text(active[d]) for d in dims}).groupby(dims, dropna=False)})
    counts = contacts_received(crm, dims, periods)
    return {key: n * 10000 / population[key[1:]] for key, n in counts.items() if population.get(key[1:])}


def backlog_open(crm: Crm, dims, periods):
    return _open_at_each_end(crm.interactions, dims, periods, "created_at", ["closed_at", "abandoned_at"])


def status_distribution(crm: Crm, dims, periods):
    return backlog_open(crm, dims, periods)


# --- work orders, claims, operators ----------------------------------------------------------------
def work_orders_completed(crm: Crm, dims, periods):
    return _group(crm.work_orders, dims, periods, "completed_at", len)


def completed_per_engineer(crm: Crm, dims, periods):
    return _group(crm.work_orders, dims, periods, "completed_at",
                  lambda g: len(g) / g["engineer_id"].nunique() if g["engineer_id"].nunique() else np.nan)


def work_order_status_distribution(crm: Crm, dims, periods):
    return _open_at_each_end(crm.work_orders, dims, periods, "created_at", ["completed_at", "cancelled_at"])


def claim_status_distribution(crm: Crm, dims, periods):
    return _open_at_each_end(crm.claims, dims, periods, "created_at", ["resolved_at"])


def claims_registered(crm: Crm, dims, periods):
    return _group(crm.claims, dims, periods, "created_at", len)


def claim_outcomes(crm: Crm, dims, periods):
    return _group(crm.claims, dims, periods, "resolved_at", len)


def _clipped(states: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    inside = states[(states["started_at"] < end) & (states["ended_at"].isna() | (states["ended_at"] > start))].copy()
    until = inside["ended_at"].fillna(pd.Timestamp(end)).clip(upper=pd.Timestamp(end))
    inside["seconds"] = (until - inside["started_at"].clip(lower=pd.Timestamp(start))).dt.total_seconds()
    return inside


def _states_in_each(crm: Crm, dims, periods, states: list[str], aggregate) -> dict[tuple, float]:
    """The operator states of `states` overlapping each period, clipped to it, grouped by `dims`."""
    out = {}
    for start, end in periods:
        rows = _clipped(crm.states, start, end)
        out |= _by(rows[rows["operator_state"].isin(states)], dims, start, aggregate)
    return out


def occupancy(crm: Crm, dims, periods):
    busy = ["busy", "after_call_work"]
    return _states_in_each(crm, dims, periods, ["ready", *busy], lambda g: g.loc[
        g["operator_state"].isin(busy), "seconds"].sum() / g["seconds"].sum())


def state_hours(crm: Crm, dims, periods):
    logged_in = ["logged_in", "ready", "busy", "after_call_work", "break"]  # every state but logged_out
    return _states_in_each(crm, dims, periods, logged_in, lambda g: g["seconds"].sum() / 3600)


# indicator -> (hand computation, the dimension sets it is checked for, family)
CHECKED: dict[str, tuple[Callable, list[str], str]] = {
    "contacts_received": (contacts_received, ["total", "channel", "direction", "region", "federal_district",
                                              "branch", "queue", "skill_group", "topic", "parent_topic",
                                              "segment", "tariff", "channel+region"], "interactions"),
    "first_response_time_p90": (first_response_time_p90, ["total", "channel", "queue", "skill_group", "site",
                                                          "region", "channel+region"], "interactions"),
    "customers_contacting": (customers_contacting, ["total", "region", "federal_district", "branch", "segment",
                                                    "tariff"], "interactions"),
    "resolution_time_avg": (resolution_time_avg, ["total", "channel"], "interactions"),
    "transfers": (transfers, ["total", "queue"], "interactions"),
    "service_level": (service_level, ["total", "channel"], "interactions"),
    "response_sla_compliance": (response_sla_compliance, ["total", "queue"], "interactions"),
    "contacts_per_10k_customers": (contacts_per_10k_customers, ["total", "region", "segment"], "interactions"),
    "backlog_open": (backlog_open, ["total", "channel"], "interactions"),
    "status_distribution": (status_distribution, ["status", "channel+status"], "interactions"),
    "work_orders_completed": (work_orders_completed, ["total", "work_order_type", "priority", "service_area",
                                                      "branch", "region", "federal_district",
                                                      "work_order_type+priority"], "work_orders"),
    "completed_per_engineer": (completed_per_engineer, ["total", "service_area"], "work_orders"),
    "work_order_status_distribution": (work_order_status_distribution, ["status", "work_order_type+status"],
                                       "work_orders"),
    "claims_registered": (claims_registered, ["total", "claim_category", "region", "federal_district", "segment",
                                              "tariff"], "claims"),
    "claim_status_distribution": (claim_status_distribution, ["status"], "claims"),
    "claim_outcomes": (claim_outcomes, ["claim_outcome", "claim_category+claim_outcome"], "claims"),
    "occupancy": (occupancy, ["total", "skill_group", "site", "skill_group+site"], "operators"),
    "state_hours": (state_hours, ["operator_state", "skill_group+operator_state"], "operators"),
}

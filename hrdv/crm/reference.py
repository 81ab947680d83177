"""CRM reference data: apply sql/crm/reference_data.sql, and the mixes the generators draw from.

The rows themselves (85 regions, branches, service areas, channels, the topic tree, queues,
tariffs) live in SQL so that a plain `psql -f` gives the same CRM; this module only applies them
and holds the weights, which are behaviour rather than data.
"""
from __future__ import annotations

import psycopg

from hrdv.settings import REPO_ROOT

SCHEMA_SQL = REPO_ROOT / "sql" / "crm" / "schema.sql"
REFERENCE_SQL = REPO_ROOT / "sql" / "crm" / "reference_data.sql"

# Share of interactions per channel (B2C telecom: the phone still dominates).
CHANNEL_MIX: dict[str, float] = {
    "call": 0.45, "chat": 0.20, "messenger": 0.13, "web": 0.10, "email": 0.07, "office": 0.05,
}
# Share of interactions per leaf topic; parents are the part before the dot.
TOPIC_MIX: dict[str, float] = {
    "internet.no_link": 0.09, "internet.slow": 0.06, "internet.unstable": 0.05,
    "internet.wifi": 0.04,
    "tv.no_signal": 0.04, "tv.channels": 0.03, "tv.quality": 0.02,
    "mobile.no_service": 0.03, "mobile.roaming": 0.02, "mobile.sim": 0.03,
    "billing.invoice": 0.12, "billing.payment": 0.07, "billing.tariff_change": 0.08,
    "billing.refund": 0.03,
    "equipment.router": 0.05, "equipment.set_top_box": 0.03, "equipment.return": 0.02,
    "moving.new_address": 0.03, "moving.suspend": 0.02,
    "other.feedback": 0.02, "other.complaint": 0.03, "other.info": 0.05,
}
# Parent topic -> skill group of the queues that serve it (mirrors queues.routing_rule).
TOPIC_SKILL: dict[str, str] = {
    "internet": "tech", "tv": "tech", "equipment": "tech",
    "billing": "billing", "mobile": "billing", "moving": "general", "other": "general",
}
# Channels with per-skill queues (q_<channel>_tech, q_<channel>_billing, q_<channel>); the
# others have a single queue q_<channel>.
SKILLED_CHANNELS = ("call", "chat", "messenger")
TARIFF_MIX: dict[str, float] = {
    "inet_100": 0.18, "inet_500": 0.17, "inet_1000": 0.07, "inet_tv": 0.2, "tv_basic": 0.06,
    "mobile_s": 0.08, "combo_family": 0.17, "combo_max": 0.07,
}
# Share of interactions by local hour 0..23 (peak late morning and early evening) and by
# weekday Monday..Sunday.
HOUR_WEIGHTS: list[float] = [
    0.4, 0.25, 0.15, 0.1, 0.1, 0.2, 0.6, 1.5, 3.5, 5.5, 6.5, 6.8,
    6.5, 6.2, 6.0, 5.8, 5.6, 5.7, 6.0, 5.5, 4.5, 3.2, 2.0, 1.0,
]
WEEKDAY_WEIGHTS: list[float] = [1.15, 1.08, 1.03, 1.0, 0.98, 0.85, 0.75]


def queue_for(channel: str, topic: str) -> str:
    """The queue the routing rules send an interaction on `topic` (leaf or parent) to."""
    if channel not in SKILLED_CHANNELS:
        return f"q_{channel}"
    skill = TOPIC_SKILL[topic.split(".", 1)[0]]
    return f"q_{channel}" if skill == "general" else f"q_{channel}_{skill}"


def apply(conn: psycopg.Connection) -> None:
    """Upsert the reference rows (idempotent); the schema must already be applied."""
    with conn.transaction():
        conn.execute(REFERENCE_SQL.read_text())


def apply_schema_and_reference(conn: psycopg.Connection) -> None:
    """sql/crm/schema.sql then the reference rows: a CRM database from nothing (tests, tools)."""
    with conn.transaction():
        conn.execute(SCHEMA_SQL.read_text())
        conn.execute(REFERENCE_SQL.read_text())

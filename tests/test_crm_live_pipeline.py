"""The live generator through the real pipeline: what it writes into the CRM arrives in the
ClickHouse buffer (Debezium -> Kafka -> ingestor -> hrdv.interactions_buffer), and its work-order
and claim changes in their Kafka topics (their buffers come with their marts).

Uses the shared session `stack` (conftest). The stack's CRM is shared with the end-to-end test,
which compares all of the CRM's interactions with staging, so this test deletes the rows it
created before it ends: the end-to-end windows then see neither them nor (filtered as deletes)
their removal.
"""
from __future__ import annotations

import time

import psycopg
import pytest
from open_window_steps import ENGINEERS_SQL

from hrdv import clickhouse
from hrdv.crm import live
from hrdv.crm.behaviour import Behaviour, scaled
from resources.kafka import KafkaResource

pytestmark = pytest.mark.stack


def _buffer_latest(dsn: str, first_id: int) -> dict[int, str | None]:
    with clickhouse.session(dsn) as client:
        rows = client.query(
            "SELECT id, argMax(status, lsn) FROM hrdv.interactions_buffer "
            "WHERE id >= {first:Int64} GROUP BY id "
            # A contact the generator deleted is gone from the CRM: its latest version is the delete.
            "HAVING argMax(is_deleted, lsn) = 0", parameters={"first": first_id}).result_rows
    return {int(i): status for i, status in rows}


def _end_offset(kafka: KafkaResource, topic: str) -> int:
    return sum(kafka.end_offsets([topic]).values())


def test_live_changes_arrive_in_the_clickhouse_buffer(stack) -> None:
    kafka = KafkaResource.of_stack(stack)
    work_orders_before = _end_offset(kafka, stack.topic("work_orders"))
    with psycopg.connect(stack.crm_dsn) as conn:
        conn.execute(ENGINEERS_SQL)
        first_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM interactions").fetchone()[0]
    try:
        stats = live.run_live(stack.crm_dsn, rate=60, duration=3, seed=21,
                              behaviour=scaled(Behaviour(), 1 / 600), progress_every=60)
        assert stats.actions["interactions.insert"] > 20 and stats.actions["interactions.update"] > 0
        work_order_changes = sum(n for action, n in stats.actions.items() if action.startswith("work_orders."))
        assert work_order_changes > 0, dict(stats.actions)
        deadline = time.monotonic() + 40
        while _end_offset(kafka, stack.topic("work_orders")) - work_orders_before < work_order_changes:
            assert time.monotonic() < deadline, "work-order changes did not reach Kafka in 40 s"
            time.sleep(1)
        with psycopg.connect(stack.crm_dsn) as conn:
            expected = dict(conn.execute("SELECT id, status FROM interactions WHERE id >= %s",
                                         (first_id,)).fetchall())
        deadline = time.monotonic() + 40
        while (arrived := _buffer_latest(stack.clickhouse_dsn, first_id)) != expected:
            assert time.monotonic() < deadline, (
                f"buffer still differs after 40 s: {len(arrived)} of {len(expected)} ids")
            time.sleep(1)
    finally:
        with psycopg.connect(stack.crm_dsn) as conn:
            conn.execute("DELETE FROM work_orders WHERE interaction_id >= %s", (first_id,))
            conn.execute("UPDATE claims SET interaction_id = NULL WHERE interaction_id >= %s", (first_id,))
            conn.execute("DELETE FROM interactions WHERE id >= %s", (first_id,))

"""Unchanged TOAST values on the real stack: an UPDATE that leaves a large text untouched reaches
Kafka as Debezium's placeholder (REPLICA IDENTITY DEFAULT, see
sql/clickhouse/queries/interaction_changes_in_window.sql for why not FULL), yet staging holds the
CRM's real text:
- the window query replaces the placeholder by the newest real value in the buffer;
- where the buffer has none (its origin dropped), the upsert keeps the staged text.
The staging SQL runs as the staging asset runs it (same functions), on a window around the test's
own commits, so no reporting window has to close first.
"""
from __future__ import annotations

import secrets
import time

import psycopg
import pytest

from hrdv import clickhouse
from hrdv.stack.connect import unavailable_placeholder
from recompute import INSERT_INTERACTION_SQL, stage_since

pytestmark = pytest.mark.stack

def _big_text() -> str:
    """40 KB that compress poorly: PostgreSQL moves it out of line (TOAST)."""
    return secrets.token_hex(20_000)


def _wait_in_buffer(dsn: str, lsn_count: dict[int, int], timeout: float = 30) -> list[tuple]:
    """Every version of the ids, once each id has at least lsn_count[id] versions in the buffer."""
    deadline = time.monotonic() + timeout
    while True:
        with clickhouse.session(dsn) as client:
            rows = client.query("SELECT id, lsn, subject FROM hrdv.interactions_buffer "
                                "WHERE id IN {ids:Array(Int64)} ORDER BY id, lsn",
                                parameters={"ids": list(lsn_count)}).result_rows
        counts = {i: sum(1 for row in rows if row[0] == i) for i in lsn_count}
        if all(counts[i] >= n for i, n in lsn_count.items()):
            return rows
        assert time.monotonic() < deadline, \
            f"buffer has {counts} versions, expected {lsn_count}; dead letters: {_dead_letters(dsn)}"
        time.sleep(0.5)


def _dead_letters(dsn: str) -> list[tuple]:
    with clickhouse.session(dsn) as client:
        return client.query("SELECT reason, substring(raw_message, 1, 300) FROM hrdv.dead_letters "
                            "ORDER BY received_at DESC LIMIT 3").result_rows


def _staged_subjects(settings, ids: tuple[int, ...]) -> dict[int, str]:
    with psycopg.connect(settings.hrdv_dsn) as conn:
        return dict(conn.execute("SELECT id, subject FROM staging.interactions WHERE id = ANY(%s)",
                                 [list(ids)]).fetchall())


@pytest.fixture
def crm(stack):
    """The CRM, and two interaction ids no other test (or earlier run) has used: each test sees
    only its own versions in the buffer. The rows are removed from the CRM and staging after."""
    base = 10**12 + 1000 * (int(time.time() * 10) % 10**6)
    with psycopg.connect(stack.crm_dsn, autocommit=True) as conn:
        yield conn, (base + 1, base + 2)
        conn.execute("DELETE FROM interactions WHERE id BETWEEN %s AND %s", [base + 1, base + 2])
    with psycopg.connect(stack.hrdv_admin_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM staging.interactions WHERE id BETWEEN %s AND %s",
                     [base + 1, base + 2])


def test_unchanged_toasted_text_reaches_staging(stack, crm) -> None:
    crm, ids = crm
    started = crm.execute("SELECT now()").fetchone()[0]
    first, second, replaced = _big_text(), _big_text(), _big_text()
    crm.execute(INSERT_INTERACTION_SQL, {"id": ids[0], "channel": "chat", "subject": first})
    crm.execute(INSERT_INTERACTION_SQL, {"id": ids[1], "channel": "chat", "subject": second})
    crm.execute("UPDATE interactions SET subject = %s WHERE id = %s", [replaced, ids[1]])
    for _ in range(2):  # updates that leave the big texts alone
        crm.execute("UPDATE interactions SET status = 'assigned', updated_at = now() "
                    "WHERE id = ANY(%s)", [list(ids)])
    rows = _wait_in_buffer(stack.clickhouse_dsn, {ids[0]: 3, ids[1]: 4})
    latest = {row[0]: row[2] for row in rows}  # ordered by lsn: the last one wins
    assert latest == {ids[0]: unavailable_placeholder(), ids[1]: unavailable_placeholder()}, \
        "the updates should carry Debezium's placeholder: the scenario would test nothing"

    stage_since(stack, started)
    assert _staged_subjects(stack, ids) == {ids[0]: first, ids[1]: replaced}


def test_an_unresolvable_placeholder_keeps_the_staged_text(stack, crm) -> None:
    """The buffer lost the insert (a dropped partition, simulated by deleting its rows): only the
    placeholder version is left, and staging must keep what it had."""
    crm, ids = crm
    started = crm.execute("SELECT now()").fetchone()[0]
    text = _big_text()
    crm.execute(INSERT_INTERACTION_SQL, {"id": ids[0], "channel": "chat", "subject": text})
    _wait_in_buffer(stack.clickhouse_dsn, {ids[0]: 1})
    stage_since(stack, started)
    crm.execute("UPDATE interactions SET status = 'assigned', updated_at = now() WHERE id = %s",
                [ids[0]])
    _wait_in_buffer(stack.clickhouse_dsn, {ids[0]: 2})
    with clickhouse.session(stack.clickhouse_dsn) as client:
        client.command("DELETE FROM hrdv.interactions_buffer WHERE id = {id:Int64} AND "
                       "subject != {p:String}", parameters={"id": ids[0], "p": unavailable_placeholder()})
    stage_since(stack, started)
    assert _staged_subjects(stack, ids)[ids[0]] == text
    with psycopg.connect(stack.hrdv_dsn) as conn:
        status = conn.execute("SELECT status FROM staging.interactions WHERE id = %s",
                              [ids[0]]).fetchone()[0]
    assert status == "assigned", "the rest of the placeholder version is staged"

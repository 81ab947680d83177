"""Debezium change events inserted into the embedded queue come out right in the buffer (chDB only).

Events are the captured ones from tests/data/debezium when present (see debezium_fixtures), so
expectations are derived from each event's own row image rather than hard-coded values.
"""
from __future__ import annotations

from typing import Any

from debezium_fixtures import (
    dump,
    event,
    event_text,
    queue_rows,
    image,
    insert_messages,
    micros,
    query,
    query_dicts,
    with_changes,
)

TEXT_COLUMNS = ("channel_code", "region_code", "topic_code", "queue_code", "direction", "status",
                "subject", "channel_detail")
INT_COLUMNS = ("customer_id", "operator_id")
TIME_COLUMNS = ("created_at", "first_response_at", "closed_at", "updated_at")

BUFFER_ROW_SQL = """
SELECT id, customer_id, channel_code, region_code, topic_code, queue_code, direction, status,
       operator_id, subject, channel_detail, resolved_on_first_contact, op, lsn, is_deleted,
       toUnixTimestamp64Micro(created_at) AS created_at,
       toUnixTimestamp64Micro(first_response_at) AS first_response_at,
       toUnixTimestamp64Micro(closed_at) AS closed_at,
       toUnixTimestamp64Micro(updated_at) AS updated_at,
       toUnixTimestamp64Milli(committed_at) AS committed_ms,
       _topic, _partition, _offset
FROM hrdv.interactions_buffer
WHERE _offset = {offset:UInt64}
"""


def buffer_row(dsn: str, offset: int) -> dict[str, Any]:
    rows = query_dicts(dsn, BUFFER_ROW_SQL, {"offset": offset})
    assert len(rows) == 1, f"expected one buffer row for offset {offset}, got {rows}"
    return rows[0]


def assert_row_matches(row: dict[str, Any], value: dict[str, Any]) -> None:
    """Every column of the event's row image is in the buffer row, converted; absent ones NULL.

    Deletes keep the key only (Debezium fills `before`'s other columns with type defaults).
    """
    img = image(value) if value["op"] != "d" else {"id": image(value)["id"]}
    assert row["id"] == img["id"]
    for column in TEXT_COLUMNS + INT_COLUMNS:
        assert row[column] == img.get(column), column
    for column in TIME_COLUMNS:
        assert row[column] == micros(img.get(column)), column
    assert row["resolved_on_first_contact"] == img.get("resolved_on_first_contact")
    assert row["op"] == value["op"]
    assert row["lsn"] == value["source"]["lsn"]
    assert row["committed_ms"] == value["source"]["ts_ms"]
    assert row["is_deleted"] == (1 if value["op"] == "d" else 0)


def test_insert_event(dsn: str) -> None:
    value = event("insert")
    insert_messages(dsn, [event_text("insert")], first_offset=7)
    row = buffer_row(dsn, 7)
    assert_row_matches(row, value)
    assert (row["_topic"], row["_partition"], row["_offset"]) == ("crm.public.interactions", 0, 7)


def test_update_event(dsn: str) -> None:
    value = event("update")
    assert value["op"] == "u"
    insert_messages(dsn, [event_text("update")])
    assert_row_matches(buffer_row(dsn, 0), value)


def test_null_column_becomes_null(dsn: str) -> None:
    value = event("update_null")
    nulls = [column for column, v in image(value).items() if v is None]
    assert nulls, "the update_null event should set some column to NULL"
    insert_messages(dsn, [event_text("update_null")])
    row = buffer_row(dsn, 0)
    assert_row_matches(row, value)
    assert all(row[column] is None for column in nulls if column in row)


def test_channel_detail_flows_once_the_crm_has_it(dsn: str) -> None:
    """CRM migration 001 adds channel_detail mid-stream: events before it lack the field (NULL),
    events after it carry it; both parse, no restart."""
    before = event("insert")
    after = with_changes(before, lsn=before["source"]["lsn"] + 1, channel_detail="ivr")
    insert_messages(dsn, [dump(before)], first_offset=0)  # two batches: one version each
    insert_messages(dsn, [dump(after)], first_offset=1)
    assert "channel_detail" not in image(before)
    assert buffer_row(dsn, 0)["channel_detail"] is None
    assert buffer_row(dsn, 1)["channel_detail"] == "ivr"


def test_cyrillic_text_round_trips(dsn: str) -> None:
    value = event("cyrillic")
    subject = image(value)["subject"]
    assert any("а" <= ch <= "я" or "А" <= ch <= "Я" for ch in subject)
    insert_messages(dsn, [event_text("cyrillic")])
    assert buffer_row(dsn, 0)["subject"] == subject


def test_delete_keeps_only_the_key(dsn: str) -> None:
    value = event("delete")
    insert_messages(dsn, [event_text("delete")])
    row = buffer_row(dsn, 0)
    assert_row_matches(row, value)
    assert row["is_deleted"] == 1 and row["op"] == "d"
    assert row["id"] == image(value)["id"]
    assert all(row[c] is None for c in TEXT_COLUMNS + INT_COLUMNS + TIME_COLUMNS)


def test_zero_byte_value_is_a_dead_letter(dsn: str) -> None:
    """A tombstone (null value) never reaches the queue (the ingestor skips it, test_ingest); a
    zero-byte value does, and must not vanish silently."""
    assert event_text("tombstone") is None
    insert_messages(dsn, [b""])
    assert query(dsn, "SELECT count() FROM hrdv.interactions_buffer") == [(0,)]
    assert query(dsn, "SELECT reason FROM hrdv.dead_letters") == [("empty value",)]


def test_latest_version_per_id_by_lsn(dsn: str) -> None:
    first = event("insert")
    lsn = first["source"]["lsn"]
    versions = [
        with_changes(first, lsn=lsn + 300, status="closed"),
        first,
        with_changes(first, lsn=lsn + 100, status="assigned"),
    ]
    # Separate inserts (like separate ingest batches), newest first: order of arrival must not matter.
    for offset, version in enumerate(versions):
        insert_messages(dsn, [dump(version)], first_offset=offset)
    item = image(first)["id"]
    latest = query(dsn, "SELECT argMax(status, lsn), max(lsn) FROM hrdv.interactions_buffer "
                        "WHERE id = {id:Int64}", {"id": item})
    assert latest == [("closed", lsn + 300)]
    # Every version is kept (the TOAST resolution reads earlier ones); FINAL does not collapse them.
    kept = query(dsn, "SELECT status, lsn FROM hrdv.interactions_buffer FINAL WHERE id = {id:Int64} "
                      "ORDER BY lsn", {"id": item})
    assert kept == [("new", lsn), ("assigned", lsn + 100), ("closed", lsn + 300)]


def test_delete_wins_over_earlier_versions(dsn: str) -> None:
    first = event("insert")
    item = image(first)["id"]
    delete = with_changes(event("delete"), lsn=first["source"]["lsn"] + 1000, id=item)
    insert_messages(dsn, [dump(first)], first_offset=0)
    insert_messages(dsn, [dump(delete)], first_offset=1)
    latest = query(dsn, "SELECT argMax(is_deleted, lsn) FROM hrdv.interactions_buffer "
                        "WHERE id = {id:Int64}", {"id": item})
    assert latest == [(1,)]
    # Both versions are kept: the latest state is the highest LSN, never a FINAL read.
    assert query(dsn, "SELECT count() FROM hrdv.interactions_buffer FINAL WHERE id = {id:Int64}",
                 {"id": item}) == [(2,)]


def test_redelivery_is_not_double_counted(dsn: str) -> None:
    text = event_text("insert")
    insert_messages(dsn, [text], first_offset=0)
    insert_messages(dsn, [text], first_offset=0)  # the same message again (at-least-once)
    item = image(event("insert"))["id"]
    assert query(dsn, "SELECT count() FROM hrdv.interactions_buffer FINAL") == [(1,)]
    per_id = query(dsn, "SELECT count(DISTINCT id), argMax(lsn, lsn) FROM hrdv.interactions_buffer")
    assert per_id == [(1, event("insert")["source"]["lsn"])]
    assert query(dsn, "SELECT uniqExact(id) FROM hrdv.interactions_buffer WHERE id = {id:Int64}",
                 {"id": item}) == [(1,)]


def test_schema_is_idempotent(dsn: str) -> None:
    from hrdv import clickhouse

    insert_messages(dsn, [event_text("insert")])
    clickhouse.apply_schema(dsn)
    assert query(dsn, "SELECT count() FROM hrdv.interactions_buffer") == [(1,)]


def test_buffer_columns_are_the_contract(dsn: str) -> None:
    """The staging query depends on these names and types."""
    columns = dict(query(dsn, "SELECT name, type FROM system.columns WHERE database = 'hrdv' "
                              "AND table = 'interactions_buffer'"))
    assert columns["id"] == "Int64"
    assert columns["lsn"] == "UInt64"
    assert columns["is_deleted"] == "UInt8"
    assert columns["committed_at"] == "DateTime64(3, 'UTC')"
    assert columns["updated_at"] == "Nullable(DateTime64(6, 'UTC'))"
    assert columns["resolved_on_first_contact"] == "Nullable(Bool)"
    assert {"_topic", "_partition", "_offset", "ingested_at", "op"} <= set(columns)


def test_other_processes_wait_for_the_session_lock(dsn: str) -> None:
    """chDB allows one process per data path: a second process waits for the lock, then works."""
    import subprocess
    import sys
    import time

    from hrdv import clickhouse

    probe = ("import sys, time; from hrdv import clickhouse\n"
             "t = time.monotonic()\n"
             "try:\n"
             "    with clickhouse.session(sys.argv[1], lock_timeout=float(sys.argv[2])) as c:\n"
             "        c.query('SELECT 1')\n"
             "except TimeoutError as e:\n"
             "    print('timeout', e); sys.exit(3)\n"
             "print('waited', time.monotonic() - t)\n")
    with clickhouse.session(dsn):
        impatient = subprocess.run([sys.executable, "-c", probe, dsn, "0.5"],
                                   capture_output=True, text=True, timeout=60)
        patient = subprocess.Popen([sys.executable, "-c", probe, dsn, "60"],
                                   stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        assert patient.poll() is None  # still waiting while we hold the path
    output, _ = patient.communicate(timeout=60)
    assert impatient.returncode == 3 and "stayed locked" in impatient.stdout
    assert patient.returncode == 0 and output.startswith("waited")


def test_held_session_hands_the_path_over_to_a_waiting_process(dsn: str) -> None:
    """The ingestor's long session yields to a process that announced its wait, then resumes."""
    import subprocess
    import sys
    import time

    from hrdv import clickhouse
    from hrdv.ingest import QUEUE_COLUMNS

    probe = ("import sys; from hrdv import clickhouse\n"
             "with clickhouse.session(sys.argv[1], lock_timeout=30) as c:\n"
             "    print(c.query('SELECT count() FROM hrdv.interactions_buffer').result_rows[0][0])\n")
    with clickhouse.HeldSession(dsn) as held:
        held.client.insert("hrdv.interactions_queue", queue_rows([event_text("insert")]),
                           column_names=QUEUE_COLUMNS)
        waiter = subprocess.Popen([sys.executable, "-c", probe, dsn], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while waiter.poll() is None and time.monotonic() < deadline:
            held.hand_over_if_waited_for()  # what the ingestor does between batches
            time.sleep(0.05)
        output, _ = waiter.communicate(timeout=30)
        assert waiter.returncode == 0 and output.strip() == "1"
        assert held.handovers == 1
        assert held.client.query("SELECT 1").result_rows == [(1,)]  # and it works again
        assert not held.hand_over_if_waited_for()  # nobody waits now

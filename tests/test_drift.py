"""Drift between staging and the CRM on the real stack: detected, and repaired by `hrdv resync`.

- A staged row changed behind the pipeline's back is reported by the staging asset's
  matches_source check (through Dagster, for the window that changed it) and by `hrdv drift`;
- `hrdv resync` re-reads it, and the next staging run restores the CRM's values;
- a version with an impossible LSN that got into the buffer and staging anyway (9e18: it would
  win over every later real change) is removed by the resync, and staging follows the CRM again.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import psycopg
import pytest
from click.testing import CliRunner
from dagster import DagsterInstance

from hrdv import clickhouse, drift
from hrdv.cli import main
from hrdv.settings import Settings
from hrdv_assets.interactions import INTERACTIONS
from partitions import key_of, window_of
from recompute import INSERT_INTERACTION_SQL, backfill, stage_since

pytestmark = pytest.mark.stack

@pytest.fixture
def target(stack: Settings):
    row_id = 10**12 + 700_000 + int(time.time()) % 100_000
    yield row_id
    with psycopg.connect(stack.crm_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM interactions WHERE id = %s", [row_id])
    with psycopg.connect(stack.hrdv_admin_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM staging.interactions WHERE id = %s", [row_id])


def _in_buffer(settings: Settings, row_id: int, condition: str = "1") -> None:
    deadline = time.monotonic() + 60
    while True:
        with clickhouse.session(settings.clickhouse_dsn) as client:
            if client.query(f"SELECT count() FROM hrdv.interactions_buffer WHERE id = {{i:Int64}} "
                            f"AND {condition}", parameters={"i": row_id}).result_rows[0][0]:
                return
        assert time.monotonic() < deadline, f"interaction {row_id} ({condition}) not in the buffer"
        time.sleep(0.5)


def _staged(settings: Settings, row_id: int) -> tuple:
    with psycopg.connect(settings.hrdv_dsn) as conn:
        return conn.execute("SELECT status, subject, lsn FROM staging.interactions WHERE id = %s",
                            [row_id]).fetchone()


def _behind_the_back(settings: Settings, row_id: int, assignments: str) -> None:
    with psycopg.connect(settings.hrdv_admin_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE staging.interactions SET {assignments} WHERE id = %s", [row_id])


def _check(settings: Settings, row_id: int) -> drift.DriftReport:
    with psycopg.connect(settings.hrdv_dsn) as db, psycopg.connect(settings.source_dsn) as source:
        return drift.check(db, source, "interactions", INTERACTIONS.column_names, [row_id],
                           datetime.now(timezone.utc))


def test_drift_is_reported_by_the_window_check_and_repaired_by_resync(stack: Settings, target: int,
                                                                      monkeypatch) -> None:
    with psycopg.connect(stack.crm_dsn, autocommit=True) as crm:
        crm.execute(INSERT_INTERACTION_SQL, {"id": target, "channel": "web", "subject": "drift target"})
        committed = crm.execute("SELECT pg_xact_commit_timestamp(xmin) FROM interactions WHERE id = %s",
                                [target]).fetchone()[0]
    assert committed is not None, "the CRM should track commit timestamps"
    key = key_of(committed)
    time.sleep(max(0.0, (window_of(key).end - datetime.now(timezone.utc)).total_seconds() + 1))
    instance = DagsterInstance.ephemeral()
    monkeypatch.setenv("HRDV_COMPLETE_WAIT_S", "30")
    monkeypatch.setenv("HRDV_DRIFT_SAMPLE", "1000")  # every key the window changed is compared
    clean = backfill(instance, key, key)  # staged by Dagster: the check finds nothing
    evaluation = next(e for e in clean.get_asset_check_evaluations()
                      if e.check_name == "matches_source" and e.asset_key == INTERACTIONS.staging_key)
    assert evaluation.passed and evaluation.metadata["judged"].value >= 1, evaluation.description
    _behind_the_back(stack, target, "status = 'closed', subject = 'edited in staging'")

    result = backfill(instance, key, key)  # the window again: the same LSN does not replace the row
    evaluation = next(e for e in result.get_asset_check_evaluations()
                      if e.check_name == "matches_source" and e.asset_key == INTERACTIONS.staging_key)
    assert not evaluation.passed and evaluation.partition == key, evaluation.description
    drifted = evaluation.metadata["drifted_keys"].value
    assert drifted == {str(target): "differs in status, subject"}, drifted
    assert evaluation.metadata["repair"].value == f"hrdv resync interactions --id {target}"

    cli = CliRunner().invoke(main, ["drift", "interactions", "--id", str(target)])
    assert cli.exit_code == 1 and f"{target}: differs in status, subject" in cli.output, cli.output

    repaired = CliRunner().invoke(main, ["resync", "interactions", "--id", str(target)])
    assert repaired.exit_code == 0 and "1 row(s) re-read from the CRM" in repaired.output, repaired.output
    typo = CliRunner().invoke(main, ["resync", "interactions", "--id", "-424242"])
    assert typo.exit_code == 1 and "not in the CRM and never staged, left alone: [-424242]" in typo.output
    stage_since(stack, committed)
    assert _staged(stack, target)[:2] == ("new", "drift target")
    assert not _check(stack, target).drifted


def test_an_impossible_lsn_that_got_in_is_removed_by_resync(stack: Settings, target: int) -> None:
    with psycopg.connect(stack.crm_dsn, autocommit=True) as crm:
        started = crm.execute("SELECT now()").fetchone()[0]
        crm.execute(INSERT_INTERACTION_SQL, {"id": target, "channel": "web", "subject": "drift target"})
        _in_buffer(stack, target)
        stage_since(stack, started)
        # A forged version past every check, in the buffer and staged: 9e18 beats every real LSN.
        with clickhouse.session(stack.clickhouse_dsn) as client:
            client.command("INSERT INTO hrdv.interactions_buffer SELECT * REPLACE ('closed' AS status, "
                           "'forged' AS subject, 'u' AS op, toUInt64(9000000000000000000) AS lsn, "
                           "'forged' AS _topic) FROM hrdv.interactions_buffer WHERE id = {i:Int64} LIMIT 1",
                           parameters={"i": target})
        stage_since(stack, started)
        assert _staged(stack, target)[:2] == ("closed", "forged")
        # The real next change is ignored: its LSN is lower.
        crm.execute("UPDATE interactions SET status = 'assigned', updated_at = now() WHERE id = %s", [target])
        _in_buffer(stack, target, "status = 'assigned'")
        stage_since(stack, started)
        assert _staged(stack, target)[:2] == ("closed", "forged")
        assert _check(stack, target).drifted[0].problem == "differs in status, subject, updated_at"

    repaired = CliRunner().invoke(main, ["resync", "interactions", "--id", str(target)])
    assert repaired.exit_code == 0, repaired.output
    assert "lsn 9000000000000000000 (beyond the source)" in repaired.output
    assert "1 staged row(s) carried an LSN beyond the source" in repaired.output
    stage_since(stack, started)
    status, subject, lsn = _staged(stack, target)
    assert (status, subject) == ("assigned", "drift target") and lsn < 9 * 10**18
    assert not _check(stack, target).drifted

"""Fault injection on the real stack: a component crashes while the CRM is written, a Dagster run
is killed in the middle of its transaction, and the warehouse still converges to the CRM exactly.

For the Kafka broker, Kafka Connect, the ClickHouse ingestor and PostgreSQL in turn, while the
live generator writes every entity (lifecycles an hour a minute, a fifth of its changes to
reference entities): the component's process tree gets SIGKILL, stays down a few seconds and
is started again with the stack's own start functions. The test times the recovery (restart
command -> a CRM change committed after it is in the ClickHouse buffer) and counts the events
Kafka holds twice. Then, at the next window boundary (the writer pauses there):
- once the buffer holds everything committed before the boundary, a run materialises staging and
  mart of every window so far (`dagster asset materialize`, one run), and is SIGKILLed, process
  tree and all, while its mart transaction waits on a lock the test holds: nothing of it is
  published (the mart keeps its previous rows; staging may be ahead, which is harmless);
- the same run again, timed; then the staging of every entity equals its CRM table row for row
  and every mart row equals
  the pandas recomputation (tests/recompute.py): nothing was lost, duplicates were harmless.
Each fault gets its own window boundary; the killed run rides on it instead of needing a fifth.

Recovery times go to the terminal summary (the `recovery_report` fixture in conftest).
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from recompute import (
    assert_entity_staged,
    assert_same,
    assert_staging_equals,
    crm_entity_rows,
    crm_rows,
    mart_rows,
    recompute_kpi,
)

from hrdv import clickhouse
from hrdv.definitions import WINDOWED
from hrdv.entities import ENTITIES
from hrdv_assets.interactions import MART_KEY
from hrdv.settings import REPO_ROOT, Settings
from hrdv.stack import faults
from partitions import WINDOW, reporting_windows, window_of
from resources.kafka import KafkaResource

pytestmark = pytest.mark.stack

RATE = 40            # CRM changes per second while faults happen
DOWNTIME_S = 3.0     # how long a killed component stays down
WAIT_S = 90.0        # bound of every wait for the pipeline
STOP_AHEAD = timedelta(seconds=1)  # the writer's last commit lands before the boundary


@dataclass
class Rig:
    """The module's shared state: the stack, the running writer, the first window to check."""

    settings: Settings
    writer: faults.Writer
    first_key: str  # the oldest window holding a change: every run starts there
    entity_rows: dict = None  # every entity's CRM rows at the last boundary

    @contextmanager
    def paused_at_boundary(self) -> Iterator[tuple[list[tuple], str]]:
        """Pause the writer at the next window boundary; yields the CRM rows then and the key of
        the window that ends there, once the ClickHouse buffer holds every change before it.

        The writer stays paused until the block ends, so that the CRM rows read at the boundary
        stay the state that staging and the marts must reach.
        """
        boundary = _next_boundary()
        _sleep_until(boundary - STOP_AHEAD)
        self.writer.stop()
        try:
            assert datetime.now(timezone.utc) < boundary, "the writer took too long to stop"
            _sleep_until(boundary + timedelta(milliseconds=50))  # the window closes
            with psycopg.connect(self.settings.crm_dsn) as conn:
                source = crm_rows(conn)
                self.entity_rows = {e.name: crm_entity_rows(conn, e) for e in ENTITIES}
            _wait_buffer_complete(self.settings, boundary)
            yield source, _key_ending_at(boundary)
        finally:
            self.writer.start()

    def assert_exact(self, source: list[tuple], last_key: str) -> None:
        """Staging of every entity equals its CRM table at the boundary, the marts of every
        window equal the recomputation."""
        first = window_of(self.first_key).start.astimezone(timezone.utc)
        end = window_of(last_key).end.astimezone(timezone.utc)
        assert_staging_equals(self.settings, source)
        with psycopg.connect(self.settings.hrdv_dsn) as hrdv:
            for entity in ENTITIES:
                assert_entity_staged(hrdv, entity, self.entity_rows[entity.name])
        assert_same(mart_rows(self.settings, first, end), recompute_kpi(source, first, end))


def _next_boundary() -> datetime:
    now = pd.Timestamp.now(tz="UTC")
    return (now.floor(WINDOW) + WINDOW).to_pydatetime()


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()))


def _key_ending_at(boundary: datetime) -> str:
    return reporting_windows.get_partition_key_for_timestamp((boundary - WINDOW).timestamp())


def _wait_buffer_complete(settings: Settings, moment: datetime) -> None:
    """Like the lag sensor: a heartbeat committed after `moment` is in Kafka, so every change
    committed before it is too; then wait for the ingestion group to pass those offsets."""
    kafka, topics = KafkaResource.of_stack(settings), [settings.topic(e.name) for e in ENTITIES]
    faults.wait_for(lambda: (kafka.latest_heartbeat() or moment) > moment, WAIT_S,
                    "a Debezium heartbeat committed after the boundary in Kafka", every=0.5)
    barrier = kafka.end_offsets(topics)
    faults.wait_for(lambda: all(lag.committed >= barrier[(lag.topic, lag.partition)]
                                for lag in kafka.lag(topics)),
                    WAIT_S, f"the ClickHouse buffer up to offsets {barrier}", every=0.5)


def _first_key(settings: Settings) -> str:
    # Every entity's topics: the reference entities' first changes (the CRM's load) come before the
    # first interaction, and a run that starts after them leaves them unstaged on a fresh stack.
    oldest = KafkaResource.of_stack(settings).earliest_commit([settings.topic(e.name) for e in ENTITIES])
    moment = max(oldest or datetime.now(timezone.utc), reporting_windows.start)
    return reporting_windows.get_partition_key_for_timestamp(moment.timestamp())


@pytest.fixture(scope="module")
def rig(stack: Settings) -> Iterator[Rig]:
    writer = faults.Writer(stack, RATE, every_entity=True)
    rig = Rig(stack, writer, _first_key(stack))
    writer.start()
    try:
        yield rig
    finally:
        writer.stop()


# --- a Dagster run killed in the middle of its mart transaction -----------------------------------
MART_LOCK_WAIT_SQL = """
SELECT pid FROM pg_stat_activity
WHERE datname = 'hrdv' AND wait_event_type = 'Lock' AND query ILIKE '%%mart.interaction_kpi%%'
  AND pid <> pg_backend_pid()
"""


def _materialize_process(settings: Settings, first_key: str, last_key: str, log: Path) -> subprocess.Popen:
    """`dagster asset materialize` of staging + mart over the windows, as an operator runs it."""
    home = settings.home / "dagster_faults"
    home.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "hrdv.definitions",
            "--select", ",".join(key.to_user_string() for key in [*WINDOWED, MART_KEY]),
            "--partition-range", f"{first_key}...{last_key}"]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env={**settings.child_env(), "DAGSTER_HOME": str(home)},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _staged_since(settings: Settings, moment: datetime) -> int:
    with psycopg.connect(settings.hrdv_dsn) as conn:
        return conn.execute("SELECT count(*) FROM staging.interactions WHERE committed_at >= %s",
                            (moment,)).fetchone()[0]


def _kill_run_mid_mart(settings: Settings, first_key: str, last_key: str, log: Path) -> int:
    """Start a run while the test locks the mart; SIGKILL its process tree once the run's mart
    transaction waits on the lock; release the lock once the run's backend is gone.
    Returns how many processes were killed."""
    # pg_stat_activity is read from an autocommit connection: inside a transaction it is a
    # snapshot that never changes.
    with psycopg.connect(settings.hrdv_dsn) as lock, \
            psycopg.connect(settings.hrdv_dsn, autocommit=True) as watch:
        lock.execute("LOCK TABLE mart.interaction_kpi IN ACCESS EXCLUSIVE MODE")
        run = _materialize_process(settings, first_key, last_key, log)
        try:
            blocked = faults.wait_for(lambda: watch.execute(MART_LOCK_WAIT_SQL).fetchall(), WAIT_S,
                                      "the run's mart transaction waiting on the lock", every=0.2)
        finally:
            killed = faults.kill_tree(run.pid)
            lock.rollback()  # the orphaned backend gets the lock, then finds its client gone
        faults.wait_for(lambda: not watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                                  ([pid for (pid,) in blocked],)).fetchall(),
                        30, "the killed run's backend to end")
    return killed


def _timed_run(settings: Settings, first_key: str, last_key: str, log: Path) -> float:
    """Run the materialisation to its end; returns its wall time."""
    began = time.monotonic()
    run = _materialize_process(settings, first_key, last_key, log)
    try:
        code = run.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        faults.kill_tree(run.pid)
        raise
    assert code == 0, f"the re-run failed; see {log}:\n{log.read_text()[-3000:]}"
    return round(time.monotonic() - began, 2)


def _killed_then_rerun(rig: Rig, last_key: str, log: Path) -> dict:
    """Materialise every window with a run killed mid-mart-transaction, then a re-run.

    The killed run must publish nothing: the mart keeps its previous rows (absent for the new
    window), even though its staging step may have committed. Returns the report row.
    """
    settings = rig.settings
    first = window_of(rig.first_key).start.astimezone(timezone.utc)
    last = window_of(last_key)
    before = mart_rows(settings, first, last.end)
    killed = _kill_run_mid_mart(settings, rig.first_key, last_key, log)
    pd.testing.assert_frame_equal(mart_rows(settings, first, last.end), before,
                                  obj="the mart after the killed run (nothing may be published)")
    staged = _staged_since(settings, last.start)
    rerun_s = _timed_run(settings, rig.first_key, last_key, log)
    print(f"Dagster run: {killed} process(es) killed while its mart transaction waited; mart "
          f"unchanged, staging already held {staged} row(s) of the new window; re-run {rerun_s:.1f} s")
    return {"fault": "Dagster run SIGKILL", "restart_s": None, "recovery_s": rerun_s,
            "duplicates": None, "note": f"mart unchanged, {staged} staged row(s) of the new window"}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("component", faults.COMPONENTS)
def test_crash_then_killed_run_loses_nothing(rig: Rig, recovery_report, component: str,
                                             tmp_path: Path) -> None:
    result = faults.recover(rig.settings, component, downtime=DOWNTIME_S, timeout=WAIT_S)
    print(f"\n{component}: SIGKILL of {result.killed} process(es), restart command "
          f"{result.restart_s:.1f} s, recovered {result.recovery_s:.1f} s after it, "
          f"{result.duplicates} duplicate event(s) in Kafka")
    recovery_report.append({"fault": f"{component} SIGKILL", "restart_s": result.restart_s,
                            "recovery_s": result.recovery_s, "duplicates": result.duplicates})
    with rig.paused_at_boundary() as (source, last_key):
        recovery_report.append(_killed_then_rerun(rig, last_key, tmp_path / "materialize.log"))
        rig.assert_exact(source, last_key)


@pytest.mark.timeout(240)
def test_a_replayed_topic_counts_nothing_twice(rig: Rig, recovery_report,
                                               tmp_path: Path) -> None:
    """Every message of the interactions topic delivered to ClickHouse a second time (a rewound
    consumer): every buffer holds each (key, lsn) once, and staging and marts stay exact."""
    with rig.paused_at_boundary() as (source, last_key):
        began = time.monotonic()
        replayed = faults.replay_topic(rig.settings)  # (every topic: tests/test_every_entity.py)
        replay_s = time.monotonic() - began
        with clickhouse.session(rig.settings.clickhouse_dsn) as client:
            for entity in ENTITIES:
                versions, distinct = client.query(
                    f"SELECT count(), uniqExact({entity.key}, lsn) FROM hrdv.{entity.name}_buffer FINAL"
                ).result_rows[0]
                assert versions == distinct, f"{entity.name}: {versions - distinct} redelivered version(s) survive FINAL"
        rerun_s = _timed_run(rig.settings, rig.first_key, last_key, tmp_path / "materialize.log")
        rig.assert_exact(source, last_key)
    recovery_report.append({"fault": "topic replayed", "restart_s": round(replay_s, 2),
                            "recovery_s": round(rerun_s, 2), "duplicates": replayed,
                            "note": "every message again; run over all windows, exact"})

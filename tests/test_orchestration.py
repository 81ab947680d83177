"""Orchestration a data engineer can trust, on the real stack with Dagster's own daemon and UI.

The suite's stack gets dagster-daemon and dagster-webserver (dagster.yaml as `up` uses it: queued
runs, pools, run monitoring with the worker health check, run retries). The daemon's sensors run
the windows by themselves; the tests then use the routes a data engineer has:
- GraphQL (Dagster's own client, as the UI's Materialize button does) and `dagster asset
  materialize`, with keys the assets must refuse: malformed, future, still open, and closed but
  not yet complete in ClickHouse (the ingestor stopped). The messages are asserted, and nothing of
  those windows reaches the mart;
- an asset backfill (the UI's route) and a job backfill of overlapping windows launched at once:
  both finish, no chDB open fails, no two mart steps ever ran at the same time, each window's
  materialisation carries its own figures (compared with a query per window), and the mart equals
  the recomputation from the CRM;
- SIGKILL of a run's worker, then of the whole daemon, while a window's mart transaction waits on
  a lock the test holds: with no manual step but starting the daemon again (what `./hrdv.sh up`,
  a supervisor or Kubernetes does), the killed windows and every later window are published and
  exact; the test prints how long windows were blocked;
- two interactions backdated into windows far apart: the late-change sensor recomputes exactly
  those two windows, in one run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import ROOT_RUN_ID_TAG
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from recompute import assert_same, crm_rows, mart_rows, recompute_kpi

from hrdv import clickhouse
from hrdv.cli import _spawn_python, start_dagster
from hrdv.dagster_api import REPOSITORY, DagsterApi
from hrdv.settings import REPO_ROOT, Settings
from hrdv.stack import faults, process
from hrdv_assets.cdc import STAGED
from hrdv_assets.interactions import INTERACTIONS, MART_KEY
from hrdv_assets.kpi import FACTS
from partitions import WINDOW, key_of, reporting_windows, window_of
from sensors.kafka_lag import run_windows

pytestmark = pytest.mark.stack

WAIT_S = 180.0
RATE = 30  # CRM changes per second while a test writes
# The refusal test's open window needs this much time left when its runs are submitted: they
# execute within seconds (a run worker's start, one pool slot), and it must still be open then.
OPEN_MARGIN_S = 40
MART_STEP_KEYS = {"publish_interaction_kpi", "recompute_interaction_kpi"}
# The sensors that request runs (hrdv/definitions.py): the lag sensor requests closed windows, the
# late-change sensors recomputes of the windows their staging assets listed.
LAG_SENSOR = "crm_kafka_lag_sensor"
LATE_SENSORS = {"interactions_late_change_sensor": [INTERACTIONS.staging_key],
                "kpi_late_change_sensor": [STAGED[name].staging_key for name in FACTS]}
SENSOR_TICKS = """
query($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    ... on Sensor { sensorState { ticks(limit: 1, statuses: [SKIPPED, SUCCESS, FAILURE]) { timestamp status } } }
  }
}"""
MART_LOCK_WAIT_SQL = """
SELECT pid FROM pg_stat_activity
WHERE datname = 'hrdv' AND wait_event_type = 'Lock' AND query ILIKE '%%mart.interaction_kpi%%'
  AND pid <> pg_backend_pid()
"""


@dataclass
class Dagster:
    settings: Settings
    instance: DagsterInstance
    writer: faults.Writer  # CRM changes while a test needs them
    settled_after_starts: int = -1  # the writer's start count at the last settle
    stopped_after_starts: int = -1  # the writer's start count when it was last stopped
    stopped_at: datetime | None = None  # then: its last change was committed before this moment

    def stop_writer(self) -> None:
        """Stop the writer (its last change is committed when this returns) and remember when."""
        if self.writer.starts != self.stopped_after_starts:
            self.writer.stop()
            self.stopped_at, self.stopped_after_starts = _now(), self.writer.starts

    def settle(self, min_quiet_s: float = 3) -> None:
        """Writer stopped, wait until the daemon has published every closed window and no run
        (window, retry or late recompute) is left or still to come: the marts are final.
        The window of the writer's last change must close first, unless it has not written since
        the last settle. Nothing is left to come once, continuously (at least min_quiet_s), no run
        is unfinished or waiting for its automatic retry, the newest closed window is published,
        both late-change sensors have read the newest staging materialisations (a recompute they
        ask for already exists as a run), and the lag sensor has finished a tick that began in that
        quiet (so it found no window to request: its runs would exist before the tick ends)."""
        self.stop_writer()
        if self.writer.starts != self.settled_after_starts:
            time.sleep(max(0.0, (window_of(key_of(self.stopped_at)).end - _now()).total_seconds() + 1))
        deadline, quiet_since = time.monotonic() + WAIT_S, None
        while True:
            assert time.monotonic() < deadline, "the daemon did not settle"
            # The tick first: the runs of a tick that ended before this read exist when `busy` is read.
            ticked = quiet_since is not None and self.sensor_ticked_since(LAG_SENSOR, quiet_since)
            busy = any(not r.is_finished or r.is_complete_and_waiting_to_retry
                       for r in self.instance.get_runs(limit=20))
            done = _closed_key() in self.published() and not busy and self.late_sensors_caught_up()
            if not done:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.time()
            elif ticked and time.time() - quiet_since >= min_quiet_s:
                break
            time.sleep(1)
        self.settled_after_starts = self.writer.starts

    def late_sensors_caught_up(self) -> bool:
        """Each late-change sensor has read the latest materialisation of its staging assets (so
        any recompute it asks for already exists as a run): a late window of the writer's last
        changes must not join a test's own late windows."""
        return all(self.late_sensor_caught_up(name, keys) for name, keys in LATE_SENSORS.items())

    def late_sensor_caught_up(self, name: str, staging_keys: list[AssetKey]) -> bool:
        latest = [record.storage_id for key in staging_keys for record in self.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key), limit=1, ascending=False).records]
        cursor = self.api.sensor_cursor(name)
        return not latest or (cursor is not None and int(cursor) >= max(latest))

    def sensor_ticked_since(self, name: str, moment: float) -> bool:
        """A tick of the sensor that began after `moment` (epoch s) has finished."""
        data = self.api.graphql(SENSOR_TICKS, {"sensor": {**REPOSITORY, "sensorName": name}})
        ticks = ((data["sensorOrError"].get("sensorState") or {}).get("ticks")) or []
        return any(tick["timestamp"] > moment for tick in ticks)

    @property
    def api(self) -> DagsterApi:
        return DagsterApi(self.settings)

    def published(self) -> set[str]:
        return (set(self.instance.get_materialized_partitions(INTERACTIONS.staging_key))
                & set(self.instance.get_materialized_partitions(MART_KEY)))

    def wait_published(self, keys: set[str], timeout: float = WAIT_S) -> float:
        """Seconds until every window of `keys` is published (staging and mart)."""
        began = time.monotonic()
        faults.wait_for(lambda: keys <= self.published(), timeout,
                        f"windows {sorted(keys - self.published())[:5]} published", every=1)
        return time.monotonic() - began

    def wait_run(self, run_id: str, timeout: float = WAIT_S):
        return faults.wait_for(lambda: (run := self.instance.get_run_by_id(run_id)) and run.is_finished and run,
                               timeout, f"run {run_id} finished", every=0.5)

    def failure_text(self, run_id: str) -> str:
        texts = []
        for entry in self.instance.all_logs(run_id):
            event = entry.dagster_event
            if event and event.event_type in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE):
                data = event.event_specific_data
                error = getattr(data, "error", None)
                user = getattr(data, "user_failure_data", None)
                texts += [entry.message or "", error.message if error else "",
                          (user.description or "") if user else ""]
        return "\n".join(texts)


@pytest.fixture(scope="module")
def dagster(stack: Settings) -> Iterator[Dagster]:
    os.environ["HRDV_COMPLETE_WAIT_S"] = "5"  # the runs refuse an incomplete window after 5 s
    # The open window's refresh is tested in test_open_window.py; here its route only (the last
    # test), so it ticks less often beside the runs these tests time.
    os.environ["HRDV_PROVISIONAL_REFRESH_S"] = "30"
    start_dagster(stack)
    try:
        yield Dagster(stack, DagsterApi(stack).instance(), faults.Writer(stack, RATE))
    finally:
        for name in ("dagster-daemon", "dagster-webserver"):
            process.stop(name, stack)
        os.environ.pop("HRDV_COMPLETE_WAIT_S", None)
        os.environ.pop("HRDV_PROVISIONAL_REFRESH_S", None)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _closed_key(back: int = 1) -> str:
    return key_of(_now() - back * WINDOW)


def _mart_count(settings: Settings, key: str) -> int:
    with psycopg.connect(settings.hrdv_dsn) as conn:
        return conn.execute("SELECT count(*) FROM mart.interaction_kpi WHERE window_start = %s",
                            (window_of(key).start,)).fetchone()[0]


def _cli_materialize_process(settings: Settings, key: str) -> subprocess.Popen:
    argv = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "hrdv.definitions",
            "--select", "staging/stg_interactions,mart/mart_interaction_kpi", "--partition", key]
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=settings.child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cli_result(child: subprocess.Popen) -> subprocess.CompletedProcess:
    """The CLI's outcome, as subprocess.run(..., capture_output=True, timeout=WAIT_S) gives it."""
    try:
        stdout, stderr = child.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _cli_materialize(settings: Settings, key: str) -> subprocess.CompletedProcess:
    return _cli_result(_cli_materialize_process(settings, key))


def _write_interaction(settings: Settings, created_at: datetime) -> int:
    """A new interaction with the given (backdated) creation time; returns its id."""
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        return conn.execute(
            """INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code,
                                         queue_code, status, subject, created_at, updated_at)
               SELECT least((SELECT min(id) FROM interactions), 0) - 1, c.id, 'chat', c.region_code,
                      'internet', 'q_chat', 'new', 'hrdv-orchestration', %s, clock_timestamp()
               FROM customers c ORDER BY c.id LIMIT 1 RETURNING id""", (created_at,)).fetchone()[0]


def _late_windows_listed(instance, since: datetime) -> list[tuple[str, str, object]]:
    """(run, partition range, late windows) of every interactions staging materialisation since."""
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=INTERACTIONS.staging_key), limit=50,
                                              ascending=False).records
    listed = []
    for record in records:
        if record.timestamp < since.timestamp():
            break
        event = record.asset_materialization
        late = event.metadata.get("late_windows")
        listed.append((record.run_id[:8], event.partition, late.value if late else None))
    return listed


def _assert_mart_exact(settings: Settings, keys: set[str]) -> None:
    first = min(window_of(k).start for k in keys).astimezone(timezone.utc)
    end = max(window_of(k).end for k in keys).astimezone(timezone.utc)
    with psycopg.connect(settings.crm_dsn) as conn:
        source = crm_rows(conn)
    assert_same(mart_rows(settings, first, end), recompute_kpi(source, first, end))


# --- refusals ---------------------------------------------------------------------------------------
def test_open_future_malformed_and_incomplete_windows_are_refused(dagster: Dagster) -> None:
    settings = dagster.settings
    client = DagsterGraphQLClient("127.0.0.1", port_number=settings.dagster_port)
    dagster.wait_published({_closed_key()})  # the daemon runs: the stack is live
    # A window with at least OPEN_MARGIN_S left (the current one, else the next from its start):
    # still open when its run executes a few seconds later. The same window, once closed, is the
    # incomplete one: the ingestor stops now and a change of it waits in Kafka.
    if (window_of(key_of(_now())).end - _now()).total_seconds() < OPEN_MARGIN_S:
        time.sleep((window_of(key_of(_now())).end - _now()).total_seconds() + 1)
    open_key = key_of(_now())
    cases = {  # the open window's run first: it is the one that must execute before a boundary
        open_key: [f"'{open_key}'", "is still open", "closes in"],
        "2030-01-01-00:00": ["'2030-01-01-00:00'", "is in the future", "only closed windows are published"],
    }
    runs = {key: client.submit_job_execution("crm_windows", tags={"dagster/partition": key})
            for key in cases}
    assert run_windows({"dagster/partition": open_key}) == []
    process.stop("ingestor", settings)
    try:
        marker = _write_interaction(settings, _now())
        assert key_of(_now()) == open_key, "the marker missed the open window"
        for key, words in cases.items():
            run = dagster.wait_run(runs[key])
            text = dagster.failure_text(run.run_id)
            assert run.status == DagsterRunStatus.FAILURE, f"{key}: {run.status}"
            assert all(word in text for word in words), f"{key}: {text[:1500]}"
        # A key that does not parse never becomes a run: Dagster refuses it at launch, naming it.
        with pytest.raises(DagsterGraphQLClientError) as refused:
            client.submit_job_execution("crm_windows", tags={"dagster/partition": "2026-11-26 11:07"})
        assert "'2026-11-26 11:07' does not match format '%Y-%m-%d-%H:%M" in str(refused.value)
        # The CLI checks partition keys itself before anything runs.
        cli = _cli_materialize(settings, "2030-01-01-00:00")
        assert cli.returncode != 0 and "Could not find a partition with key `2030-01-01-00:00`" in cli.stdout + cli.stderr

        # Closed but not complete: its marker is still in Kafka. The GraphQL run and the CLI's
        # run are started together (each refuses on its own; their steps take turns in the pools).
        time.sleep(max(0.0, (window_of(open_key).end - _now()).total_seconds()) + 2)
        graphql_run_id = client.submit_job_execution("crm_windows", tags={"dagster/partition": open_key})
        cli_child = _cli_materialize_process(settings, open_key)
        graphql_run = dagster.wait_run(graphql_run_id)
        cli = _cli_result(cli_child)
        for text in (dagster.failure_text(graphql_run.run_id), cli.stdout + cli.stderr):
            assert f"window '{open_key}' ends at" in text and "may not all be in ClickHouse yet" in text, text[-2000:]
            assert "the ClickHouse ingestion group is behind the Kafka topics by" in text
        assert graphql_run.status == DagsterRunStatus.FAILURE and cli.returncode != 0
        assert _mart_count(settings, open_key) == 0 and open_key not in dagster.published(), \
            "the open or incomplete window reached the mart"
    finally:
        _spawn_python(settings, "ingestor", ["hrdv.ingest"])
    # Once the buffer holds it, the sensor publishes that window by itself.
    dagster.wait_published({open_key})
    assert _mart_count(settings, open_key) >= 1, f"marker {marker} not counted"


# --- two routes at once -----------------------------------------------------------------------------
def _mart_step_intervals(instance: DagsterInstance, run_ids: list[str]) -> list[tuple[float, float, str]]:
    intervals = []
    for run_id in run_ids:
        started = {}
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if not event or event.step_key not in MART_STEP_KEYS:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                intervals.append((started.pop(event.step_key), entry.timestamp, run_id))
    return sorted(intervals)


def test_an_asset_backfill_and_a_job_backfill_at_once(dagster: Dagster) -> None:
    settings, instance = dagster.settings, dagster.instance
    dagster.writer.start()
    time.sleep(40)
    dagster.settle()
    keys = [_closed_key(n) for n in range(8, 0, -1)]  # 8 closed windows, the last ones written
    began = _now()
    asset_backfill = dagster.api.asset_backfill(keys, [INTERACTIONS.staging_key, MART_KEY])
    job_backfill = dagster.api.job_backfill(keys[2:], "crm_windows")
    for backfill_id in (asset_backfill, job_backfill):
        status = dagster.api.wait_backfill(backfill_id, WAIT_S)
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), f"backfill {backfill_id}: {status}"
    runs = [r for r in instance.get_runs(RunsFilter(tags={"dagster/backfill": asset_backfill}))] + \
           [r for r in instance.get_runs(RunsFilter(tags={"dagster/backfill": job_backfill}))]
    assert runs and all(r.status == DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
    # Every route runs in one process (the definitions' executor), with no chDB open failing.
    for run in runs:
        text = "\n".join(e.message or "" for e in instance.all_logs(run.run_id))
        assert "Executing steps in process" in text and "Launching subprocess" not in text
        assert "EmbeddedServer" not in text and "stayed locked" not in text
    # Never two mart writers at once, in these runs or any other since they began.
    recent = [r.run_id for r in instance.get_runs(RunsFilter(updated_after=began))]
    intervals = _mart_step_intervals(instance, recent)
    for (start_a, end_a, run_a), (start_b, _, run_b) in zip(intervals, intervals[1:]):
        assert start_b >= end_a, f"mart steps of {run_a} and {run_b} overlapped"
    _assert_mart_exact(settings, set(keys))
    _assert_per_window_metadata(dagster, keys)


def _assert_per_window_metadata(dagster: Dagster, keys: list[str]) -> None:
    """Each window's latest materialisation carries that window's own figures."""
    settings, instance = dagster.settings, dagster.instance
    mart = _latest_metadata(instance, MART_KEY, keys)
    staging = _latest_metadata(instance, INTERACTIONS.staging_key, keys)
    with psycopg.connect(settings.hrdv_dsn) as conn:
        for key in keys:
            rows, opened, closed = conn.execute(
                "SELECT count(*), coalesce(sum(opened), 0), coalesce(sum(closed), 0) "
                "FROM mart.interaction_kpi WHERE window_start = %s", (window_of(key).start,)).fetchone()
            assert (mart[key]["dagster/row_count"], mart[key]["opened"], mart[key]["closed"]) == \
                (rows, opened, closed), key
            assert mart[key]["window_start"] == window_of(key).start.isoformat()
    with clickhouse.session(settings.clickhouse_dsn) as client:
        for key in keys:
            window = window_of(key)
            changed = client.query(
                "SELECT uniqExact(id) FROM hrdv.interactions_buffer WHERE committed_at >= {s:DateTime64(3, 'UTC')} "
                "AND committed_at < {e:DateTime64(3, 'UTC')}",
                parameters={"s": window.start, "e": window.end}).result_rows[0][0]
            assert staging[key]["dagster/row_count"] == changed, key


def _latest_metadata(instance: DagsterInstance, asset_key: AssetKey, keys: list[str]) -> dict[str, dict]:
    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=keys), limit=1000).records
    latest: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        materialization = record.asset_materialization
        latest[materialization.partition] = {k: v.value for k, v in materialization.metadata.items()}
    assert set(latest) >= set(keys)
    return latest


# --- SIGKILL in the middle of a window's run ----------------------------------------------------------
def _kill_mid_mart(dagster: Dagster, kill: str) -> tuple[DagsterRun, float]:
    """Lock the mart, wait for a window run's mart transaction to wait on it, then SIGKILL the
    run's worker ('worker') or the daemon with its whole process tree ('daemon'); release the
    lock. Returns the killed run and the moment of the kill (monotonic)."""
    settings, instance = dagster.settings, dagster.instance
    with psycopg.connect(settings.hrdv_dsn) as lock, \
            psycopg.connect(settings.hrdv_dsn, autocommit=True) as watch:
        lock.execute("LOCK TABLE mart.interaction_kpi IN ACCESS EXCLUSIVE MODE")
        try:
            faults.wait_for(lambda: watch.execute(MART_LOCK_WAIT_SQL).fetchall(), WAIT_S,
                            "a window run's mart transaction waiting on the lock", every=0.2)
            run = next(r for r in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
                       if any(e.dagster_event and e.dagster_event.step_key in MART_STEP_KEYS
                              and e.dagster_event.event_type == DagsterEventType.STEP_START
                              for e in instance.all_logs(run_id=r.run_id)))
            worker = dagster.instance.run_launcher._worker(run.run_id)  # noqa: SLF001
            assert worker, f"run {run.run_id} recorded no worker pid"
            if kill == "worker":
                faults.kill_tree(worker[0])
            else:
                faults.kill_tree(process.pid_of("dagster-daemon", settings))
            killed_at = time.monotonic()
        finally:
            lock.rollback()
    windows = _windows_of(run)
    print(f"\n{kill} SIGKILL: run {run.run_id[:8]} ({run.job_name}) of {len(windows)} window(s) "
          "killed mid-mart")
    return run, killed_at


def _windows_of(run: DagsterRun) -> set[str]:
    """The windows a window run (partition tags) or a late recompute (op config) publishes."""
    config = run.run_config.get("ops", {}).get("recompute_interaction_kpi", {}).get("config", {})
    return set(run_windows(run.tags)) | set(config.get("windows", []))


def _wait_recovered(dagster: Dagster, run: DagsterRun) -> None:
    """A killed window run: its windows get published; a killed recompute: a retry of it succeeds."""
    if run.job_name != "interaction_kpi_recompute":
        dagster.wait_published(_windows_of(run))
        return
    faults.wait_for(lambda: any(r.status == DagsterRunStatus.SUCCESS for r in dagster.instance.get_runs(
        RunsFilter(tags={ROOT_RUN_ID_TAG: run.run_id}))), WAIT_S, f"a retry of recompute {run.run_id}",
        every=1)


@pytest.mark.parametrize("kill", ["worker", "daemon"])
def test_a_killed_run_blocks_nothing_and_its_windows_are_published(dagster: Dagster, kill: str,
                                                                   recovery_report) -> None:
    settings = dagster.settings
    dagster.writer.start()
    run, killed_at = _kill_mid_mart(dagster, kill)
    during = key_of(_now())  # open at the kill: the writer writes into it until it closes
    windows = _windows_of(run)
    assert windows, f"the killed run {run.run_id} names no window"
    if kill == "daemon":
        time.sleep(2)
        start_dagster(settings)  # starts what is down, as `./hrdv.sh up` (or a supervisor) does
    _wait_recovered(dagster, run)
    recovered_at = time.monotonic()
    blocked_s = recovered_at - killed_at
    # Every window closed meanwhile is published too: nothing stayed blocked. The window open at
    # the kill holds the writer's changes for certain (the killed one may be an empty catch-up window).
    later = {_closed_key(), during}
    # The writer writes into that window until its last second, then stops: its last change is in
    # a window the test waits for anyway, so settling has no further window to wait for.
    time.sleep(max(0.0, (window_of(during).end - timedelta(seconds=1) - _now()).total_seconds()))
    dagster.stop_writer()
    dagster.wait_published(later)
    later_s = time.monotonic() - recovered_at
    dagster.settle()
    _assert_mart_exact(settings, windows | later)
    print(f"{kill} SIGKILL: killed window(s) published {blocked_s:.1f} s after the kill; "
          f"the newest closed window {later_s:.1f} s after that")
    recovery_report.append({"fault": f"Dagster {kill} SIGKILL", "restart_s": None,
                            "recovery_s": round(blocked_s, 1), "duplicates": None,
                            "note": "until the killed run's windows were published, no manual step"})
    assert blocked_s < 120, f"windows blocked {blocked_s:.0f} s"


# --- exact recomputes ---------------------------------------------------------------------------------
def test_late_changes_to_two_windows_far_apart_recompute_those_two(dagster: Dagster) -> None:
    settings, instance = dagster.settings, dagster.instance
    dagster.settle()
    first = reporting_windows.get_first_partition_key()
    far, near = window_of(first), window_of(_closed_key(3))
    assert (near.start - far.start) >= 20 * WINDOW, "the partitions are too recent for this test"
    began = _now()
    ids = [_write_interaction(settings, far.start + timedelta(seconds=5)),
           _write_interaction(settings, near.start + timedelta(seconds=5))]
    expected = sorted([key_of(far.start), key_of(near.start)])

    def recompute_run():
        runs = instance.get_runs(RunsFilter(job_name="interaction_kpi_recompute", updated_after=began))
        return next((r for r in runs if r.status == DagsterRunStatus.SUCCESS), None)

    run = faults.wait_for(recompute_run, WAIT_S, f"a recompute run for interactions {ids}", every=1)
    windows = run.run_config["ops"]["recompute_interaction_kpi"]["config"]["windows"]
    assert windows == expected, f"recomputed {windows}, expected exactly {expected}; " \
                                f"late windows listed by staging since: {_late_windows_listed(instance, began)}"
    materialized = sorted(e.asset_materialization.partition for e in instance.all_logs(
        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION))
    assert materialized == expected
    _assert_mart_exact(settings, set(expected))


# --- the open window, from the daemon ------------------------------------------------------------------
def test_the_daemon_refreshes_the_open_window_and_judges_freshness(dagster: Dagster) -> None:
    """The sensors' route: provisional_kpi_sensor's refreshes are materialisations of
    mart/kpi_provisional, pipeline_freshness_sensor observes ops/pipeline_health and evaluates both
    freshness checks, all in the daemon without a run."""
    from dagster import AssetCheckKey

    from hrdv_assets.kpi import PUBLICATIONS_KEY
    from hrdv_assets.open_window import FINAL_CHECK, HEALTH_KEY, PROVISIONAL_CHECK, PROVISIONAL_KEY

    instance, began = dagster.instance, time.time()

    def refreshed():
        event = instance.get_latest_materialization_event(PROVISIONAL_KEY)
        return event if event and event.timestamp > began else None

    event = faults.wait_for(refreshed, 60, "a provisional refresh reported by the daemon's sensor", every=1)
    metadata = event.asset_materialization.metadata
    assert metadata["open_window"].value == key_of(_now()) or metadata["open_window"].value == key_of(_now() - WINDOW)
    assert not event.run_id, "a refresh is reported by the sensor, not by a run"
    observed = instance.fetch_observations(HEALTH_KEY, limit=1).records
    assert observed and "buffer_age_seconds" in observed[0].asset_observation.metadata
    for key in (AssetCheckKey(PUBLICATIONS_KEY, FINAL_CHECK), AssetCheckKey(PROVISIONAL_KEY, PROVISIONAL_CHECK)):
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
        assert history, f"{key.to_user_string()} was never evaluated"
    crm_runs = instance.get_runs(RunsFilter(job_name="crm_windows"), limit=20)
    assert crm_runs and all(not r.asset_check_selection or not any(
        c.name in (FINAL_CHECK, PROVISIONAL_CHECK) for c in r.asset_check_selection) for r in crm_runs), \
        "a window run executed the freshness checks (the sensor evaluates them)"

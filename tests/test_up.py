"""`hrdv up` heals what crashed, and the live generator outlives a PostgreSQL crash.

On the real stack:
- the Kafka broker and the ingestor are SIGKILLed together, and Connect is frozen for 15 s once
  the broker is back, so that it rejoins its group as a new member (the fault that once kept the
  connector UNASSIGNED for 300 s while `up` gave up before starting the ingestor); the function
  `up` runs brings every component back, the connector RUNNING, and a CRM change reaches the
  ClickHouse buffer;
- the live generator, started as `up` starts it, keeps running and committing through a SIGKILL
  of PostgreSQL and its restart.
Without the stack: `up`'s two phases go past a failed or slow component and report each one.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from hrdv.cli import bring_up
from hrdv.settings import REPO_ROOT, Settings
from hrdv.stack import connect, faults, process
from hrdv.stack import up as stack_up

WAIT_S = 120.0
STALL_S = 15.0  # Connect's group session is 10 s


# --- on the stack -----------------------------------------------------------------------------------
@pytest.mark.stack
@pytest.mark.timeout(300)
def test_up_after_broker_and_ingestor_die_together(stack: Settings, recovery_report) -> None:
    faults.write_marker(stack)  # Debezium creates the topic with its first interaction
    since = faults.wait_for(lambda: faults.end_offsets(stack), WAIT_S, "offsets of the interactions topic")
    log_size = process.log_path("connect", stack).stat().st_size
    killed = faults.sigkill(stack, "kafka") + faults.sigkill(stack, "ingestor")
    time.sleep(3)
    # Connect frozen for longer than its group session (10 s) once the broker is back: the broker
    # expires its membership and the worker rejoins as a NEW member, which is what kept the
    # connector UNASSIGNED for 300 s on a busy machine.
    stall = faults.stall_when(stack, "connect", STALL_S, lambda: process.port_open(stack.kafka_port))
    began = time.monotonic()
    outcomes = bring_up(stack, customers=500, history_days=0, rate=0, dagster=False, timeout=WAIT_S)
    up_s = time.monotonic() - began
    stall.join(STALL_S + 30)
    print("\n" + stack_up.table(outcomes))

    states = {o.component: o for o in outcomes}
    assert [o for o in outcomes if not o.ok] == [], "every component healthy after `up`"
    assert set(states) == {"postgres", "kafka", "connect", "stores", "connector", "ingestor"}
    assert "started" in states["kafka"].detail and "started" in states["ingestor"].detail
    assert connect.states(connect.connector_health(stack)) == ["RUNNING", "RUNNING"]
    scan = faults.marker_through(stack, since, WAIT_S)  # data flows: CRM -> Kafka -> buffer
    recovered_s = round(time.monotonic() - began, 2)
    rejoined = _rejoined_as_new_member(stack, log_size)
    print(f"broker + ingestor SIGKILL ({killed} processes), Connect stalled {STALL_S:g} s "
          f"(rejoined as a new member: {rejoined}): `up` {up_s:.1f} s, a change committed after "
          f"it in the buffer {recovered_s:.1f} s after `up` began")
    recovery_report.append({"fault": "kafka+ingestor, up", "restart_s": round(up_s, 2),
                            "recovery_s": recovered_s, "duplicates": scan.duplicates,
                            "note": f"healed by `up`; Connect stalled {STALL_S:g} s, "
                                    f"new member: {rejoined}"})


def _rejoined_as_new_member(settings: Settings, since_byte: int) -> bool:
    """Whether the Connect worker lost its member id after `since_byte` of its log."""
    with open(process.log_path("connect", settings), "rb") as log:
        log.seek(since_byte)
        return b"Resetting generation and member id" in log.read()


def _count_changed_since(settings: Settings, moment: datetime) -> int:
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM interactions WHERE updated_at > %s",
                            (moment,)).fetchone()[0]


def _crm_now(settings: Settings) -> datetime:
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


@pytest.mark.stack
@pytest.mark.timeout(240)
def test_live_generator_survives_a_postgres_crash(stack: Settings, tmp_path: Path) -> None:
    """The live generator as `up` runs it: SIGKILL of PostgreSQL, restarted as the stack does;
    the generator is still alive afterwards and commits new changes, and says it reconnected."""
    log = tmp_path / "generator.log"
    firsts = _next_ids(stack)
    with open(log, "wb") as out:
        generator = subprocess.Popen(
            [sys.executable, "-u", "-m", "hrdv.cli", "generate", "--mode", "live", "--rate", "20"],
            cwd=REPO_ROOT, env=stack.child_env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        started = _crm_now(stack)
        faults.wait_for(lambda: _count_changed_since(stack, started), WAIT_S,
                        "the live generator's first changes", every=0.5)
        faults.sigkill(stack, "postgres")
        time.sleep(2)
        faults.restart(stack, "postgres")
        restarted = _crm_now(stack)
        faults.wait_for(lambda: _count_changed_since(stack, restarted) >= 20, WAIT_S,
                        "changes committed by the generator after PostgreSQL restarted", every=0.5)
        assert generator.poll() is None, f"the generator died:\n{log.read_text()[-3000:]}"
        output = log.read_text()
        assert "lost the CRM" in output and "reconnected after" in output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
    finally:
        if generator.poll() is None:
            faults.kill_tree(generator.pid)
        _delete_from(stack, firsts)
    # Leave the stack streaming for the next tests (Debezium reconnects after 2 s).
    connect.wait_streaming(stack, _crm_now(stack), WAIT_S)


GENERATED = ("claims", "work_orders", "interactions")  # in an order foreign keys allow deleting


def _next_ids(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        return {t: conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {t}").fetchone()[0]
                for t in GENERATED}


def _delete_from(settings: Settings, firsts: dict[str, int]) -> None:
    """Delete what the generator wrote (ids from `firsts` on): its open lifecycles would
    otherwise be resumed by the next live run on this stack and crowd out its arrivals."""
    with psycopg.connect(settings.crm_dsn, connect_timeout=10) as conn:
        for table in GENERATED:
            conn.execute(f"DELETE FROM {table} WHERE id >= %s", (firsts[table],))


# --- the live generator's state after lost connections (a PostgreSQL of its own) -------------------
def _terminate_generator(dsn: str) -> bool:
    """pg_terminate_backend of the live generator's connection: to it, a server that went away."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return bool(conn.execute("SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE application_name = 'hrdv-live'").fetchone()[0])


def _new_rows(dsn: str, tables: list[str], above: dict[str, int]) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE id > %s", (above[t],)).fetchone()[0]
                for t in tables}


def test_live_generator_counts_only_what_committed_across_lost_connections(fresh_crm) -> None:
    """Its connection is killed three times at 800 changes/s (so mostly mid-transaction): it
    reconnects each time, and what it counts is exactly what the CRM holds: the transaction in
    flight counts only if txid_status() says it committed (both outcomes occur), and the
    simulation is rebuilt from the CRM; every lifecycle is still in order."""
    from test_crm_live import FAST, _assert_lifecycle_order

    from hrdv.crm import live

    dsn, tables = fresh_crm(), ["interactions", "work_orders", "claims"]
    with psycopg.connect(dsn) as conn:
        above = {t: conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0] for t in tables}
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(stats=live.run_live(
        dsn, rate=800, duration=8, seed=4, behaviour=FAST, progress_every=60)))
    thread.start()
    terminated = 0
    for _ in range(3):
        time.sleep(1.5)
        terminated += faults.wait_for(lambda: _terminate_generator(dsn), 30, "the generator's backend")
    thread.join(60)
    assert not thread.is_alive() and "stats" in result, "the live run ended on its own"
    stats = result["stats"]
    assert stats.reconnects == terminated == 3
    actions = stats.actions
    assert _new_rows(dsn, tables, above) == {
        "interactions": actions["interactions.insert"] - actions["interactions.delete"],
        "work_orders": actions["work_orders.insert"], "claims": actions["claims.insert"]}
    _assert_lifecycle_order(dsn)


# --- without the stack: up's phases -----------------------------------------------------------------
def _component(name: str, start, healthy, needs: tuple[str, ...] = ()) -> stack_up.Component:
    return stack_up.Component(name, start, healthy, needs)


def _fail() -> str:
    raise RuntimeError("kafka: did not open port 1 within 60 s; see kafka.log\n--- last lines ---")


def test_up_goes_past_a_failed_and_a_slow_component_and_reports_each() -> None:
    calls: list[str] = []
    slow = iter([False, False, True])  # healthy on the third probe
    plan = stack_up.Plan([
        _component("postgres", lambda: calls.append("postgres") or "running", lambda: (True, "ok")),
        _component("kafka", _fail, lambda: (True, "ok")),
        _component("connect", lambda: calls.append("connect") or "started", lambda: (True, "ok"),
                   needs=("kafka",)),
        _component("connector", lambda: "updated", lambda: (next(slow), "UNASSIGNED")),
        _component("ingestor", lambda: calls.append("ingestor") or "started", lambda: (True, "pid 1")),
        _component("generator", lambda: "started", lambda: (False, "not running")),
    ])
    stack_up.start_all(plan)
    outcomes = {o.component: o for o in stack_up.verify_all(plan, timeout=4)}

    assert calls == ["postgres", "ingestor"], "a failure skips only what needs it"
    assert (outcomes["kafka"].state, outcomes["kafka"].ok) == ("FAILED", False)
    assert outcomes["kafka"].detail == "kafka: did not open port 1 within 60 s; see kafka.log"
    assert (outcomes["connect"].state, outcomes["connect"].detail) == ("skipped", "needs kafka")
    assert outcomes["connector"].ok and outcomes["connector"].state == "healthy"
    assert outcomes["ingestor"].ok
    assert (outcomes["generator"].state, outcomes["generator"].ok) == ("NOT HEALTHY", False)
    text = stack_up.table(list(outcomes.values()))
    assert "generator" in text and "NOT HEALTHY" in text and "not running" in text


def _doctor(monkeypatch, calls: list[str]) -> stack_up.ConnectorDoctor:
    monkeypatch.setattr(stack_up, "UNASSIGNED_GRACE_S", 0.0)
    monkeypatch.setattr(connect, "restart_connector",
                        lambda settings, only_failed: calls.append(f"REST onlyFailed={only_failed}") or 202)
    monkeypatch.setattr(stack_up.kafka, "stop_connect", lambda settings: calls.append("stop worker"))
    monkeypatch.setattr(stack_up.kafka, "start_connect", lambda settings: calls.append("start worker"))
    return stack_up.ConnectorDoctor(settings=None, plan=stack_up.Plan([]))  # type: ignore[arg-type]


def test_a_failed_task_is_restarted_through_rest(monkeypatch) -> None:
    calls: list[str] = []
    doctor = _doctor(monkeypatch, calls)
    doctor._heal(["RUNNING", "FAILED"])
    doctor._heal(["RUNNING", "FAILED"])  # too soon for a second restart
    assert calls == ["REST onlyFailed=True"]


def test_a_connector_stuck_unassigned_gets_its_worker_restarted_once(monkeypatch) -> None:
    """A REST restart does not reassign lost work (measured), a new worker process does."""
    calls: list[str] = []
    doctor = _doctor(monkeypatch, calls)
    for _ in range(4):
        doctor._heal(["UNASSIGNED", "RUNNING"])
    assert calls == ["stop worker", "start worker"]


def test_connector_running_is_left_alone(monkeypatch) -> None:
    calls: list[str] = []
    doctor = _doctor(monkeypatch, calls)
    monkeypatch.setattr(stack_up, "UNASSIGNED_GRACE_S", 60.0)
    doctor._heal(["RUNNING", "RUNNING"])
    doctor._heal(["UNASSIGNED"])  # just (re)registered: within the grace
    doctor._heal(["UNASSIGNED"])
    assert calls == []

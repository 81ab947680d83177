"""The Debezium PostgreSQL connector on Kafka Connect: registration, status, source offsets.

The config is stack/debezium-crm.json with ${placeholders} filled from the settings, plus what
comes from hrdv/entities.py: table.include.list (every entity's table and the heartbeat table) and
column.exclude.list (personal data, dropped by Debezium before anything is written to Kafka). The
password never enters the file or Connect's config topic: it is written to a 0600 file in
$HRDV_HOME/conf and referenced through the worker's FileConfigProvider, so the REST API (which
echoes connector configs) shows only `${file:...}`.

Upgrade in place: Debezium snapshots only when a connector has no offsets, so a table added to the
include list of a running connector would stream its future changes but never its existing rows.
put_connector notes which captured tables Debezium has never sent (new_tables) and, once the
connector streams with the new config, request_snapshots asks for an incremental snapshot of
exactly those through the signal table (SIGNAL_TABLE, signal.data.collection).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import psycopg
import requests
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from hrdv import entities
from hrdv.settings import REPO_ROOT, Settings
from hrdv.stack import process
from hrdv.stack.process import StackError

CONFIG_TEMPLATE = REPO_ROOT / "stack" / "debezium-crm.json"
PASSWORD_KEY = "database.password"
# Debezium's signal table (sql/crm/schema.sql). Debezium adds it to its table filter by itself, so
# it is in the publication but not in table.include.list.
SIGNAL_TABLE = "public.debezium_signal"


def publication_name(settings: Settings) -> str:
    return f"{settings.connector_name.replace('-', '_')}_pub"


def _template() -> dict[str, str]:
    """stack/debezium-crm.json as written, ${placeholders} and all."""
    return json.loads(CONFIG_TEMPLATE.read_text())


def captured_tables() -> list[str]:
    """The tables Debezium captures, schema-qualified (the config's table.include.list): every
    entity of hrdv/entities.py and the heartbeat table."""
    return entities.captured_tables()


def unavailable_placeholder() -> str:
    """What Debezium sends instead of an unchanged TOASTed value (REPLICA IDENTITY DEFAULT)."""
    return _template()["unavailable.value.placeholder"]


def _secrets_file(settings: Settings) -> Path:
    return settings.home / "conf" / "connect-secrets.properties"


def _write_secret(settings: Settings) -> Path:
    path = _secrets_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    escaped = settings.debezium.password.replace("\\", "\\\\")  # java.util.Properties escaping
    path.write_text(f"{PASSWORD_KEY}={escaped}\n")
    return path


def connector_config(settings: Settings) -> dict[str, str]:
    """The connector config as registered (password as a FileConfigProvider reference)."""
    values = {
        "pg_port": str(settings.pg_port),
        "pg_user": settings.debezium.user,
        "topic_prefix": settings.topic_prefix,
        "slot_name": settings.slot_name,
        "publication_name": publication_name(settings),
    }
    config = {key: Template(str(value)).substitute(values) for key, value in _template().items()}
    # Regular expressions matched against whole names; a plain name matches itself (a dot also
    # matches any character, which no other CRM name can exploit).
    config["table.include.list"] = ",".join(captured_tables())
    # schema.table.column of every personal-data column: Debezium leaves them out of the
    # snapshot's SELECT, the incremental snapshot's chunk queries and every streamed event.
    config["column.exclude.list"] = ",".join(entities.excluded_columns())
    config["signal.data.collection"] = SIGNAL_TABLE
    config["signal.enabled.channels"] = "source"
    config[PASSWORD_KEY] = f"${{file:{_secrets_file(settings)}:{PASSWORD_KEY}}}"
    return config


def _url(settings: Settings, suffix: str = "") -> str:
    return f"{settings.connect_url}/connectors/{settings.connector_name}{suffix}"


@dataclass
class Registration:
    """What one PUT of the config did, and what is left to do once the connector streams."""

    verb: str                   # registered | updated
    since: Any                  # the database's now() before the PUT (see wait_streaming)
    new: list[str] = field(default_factory=list)  # captured tables Debezium has never sent
    restarts: bool = True       # the PUT changed the config, so Connect restarts the task
    old_pid: int | None = None  # the slot's walsender before the PUT (the old task's)
    new_pid: int | None = None  # a walsender seen after the PUT, and when (_new_task_streams)
    new_pid_seen: Any = None


def put_connector(settings: Settings) -> Registration:
    """Create or update the connector (PUT is idempotent) without waiting for it.

    Returns the Registration: "registered" | "updated", the database's now() taken before the PUT
    (the `since` that wait_streaming and streaming_state take as proof of a fresh heartbeat), and
    the tables whose existing rows request_snapshots must still have read.
    """
    _write_secret(settings)
    registered = _registered_config(settings)
    sent = tables_sent(settings, registered)
    if sent is not None and not _state_path(settings).exists():
        _record_sent(settings, sent)  # before the PUT replaces the config it was read from
    new = new_tables(captured_tables(), sent)
    # A PUT that changes the config restarts the task: the signal must wait for a new walsender.
    # An unchanged config restarts nothing (the task runs with it already): any streaming will do.
    changed = registered is None or {k: v for k, v in registered.items() if k != "name"} \
        != connector_config(settings)
    old_pid = _walsender_pid(settings)
    since = _db_now(settings)
    response = _put_config(settings)
    if response.status_code not in (200, 201):
        raise StackError(f"connect: PUT {_url(settings, '/config')} answered "
                         f"{response.status_code}: {response.text[:2000]}")
    if sent is None:
        # A new connector: its initial snapshot reads every captured table (and is redone from
        # the start if interrupted), so all of them count as sent.
        _record_sent(settings, captured_tables())
    elif new:
        print(f"connector: {len(new)} new tables, incremental snapshot to be requested once it "
              f"streams: {', '.join(new)}", flush=True)
    return Registration("registered" if response.status_code == 201 else "updated", since, new,
                        changed, old_pid)


# --- tables added to a running capture: the incremental snapshot --------------------------------
# Which tables are new? The record kept here is the list of tables whose rows Debezium has sent or
# been asked to send (_state_path, under $HRDV_HOME beside the broker's data that holds the
# connector's offsets), written only AFTER the signal asking for them is committed. Comparing the
# connector's registered config (GET /connectors/NAME/config) with the new one would lose the new
# tables for good if `up` died between the PUT and the signal: the next `up` would find the new
# config already registered. The registered config serves only as the starting point of a stack
# from before this record (its include list is what its initial snapshot read), and a connector
# that is not registered at all is new: its initial snapshot reads everything.
# Known limit: a connector deleted by hand (DELETE /connectors/NAME) keeps its offsets in Connect's
# offsets topic; registered again it resumes without a snapshot while this code takes it for new.


def _state_path(settings: Settings) -> Path:
    return settings.home / "conf" / "debezium-tables-sent.json"


class _Rebalancing(Exception):
    pass


@retry(stop=stop_after_delay(30), wait=wait_fixed(1), retry=retry_if_exception_type(_Rebalancing),
       reraise=True)
def _registered_config(settings: Settings) -> dict[str, str] | None:
    """GET /connectors/NAME/config; None if the connector is not registered. As patient as the PUT
    that follows it (a worker just back in its group, or frozen for a while, answers late or 409)."""
    response = requests.get(_url(settings, "/config"), timeout=30)
    if response.status_code == 404:
        return None
    if response.status_code == 409:
        raise _Rebalancing(response)
    response.raise_for_status()
    return response.json()


def tables_sent(settings: Settings, config: dict[str, str] | None = None) -> list[str] | None:
    """The captured tables whose existing rows Debezium has sent (initial snapshot) or was asked
    to send (incremental snapshot signal); None if the connector is not registered (new).
    `config`: the registered config, if already fetched."""
    config = _registered_config(settings) if config is None else config
    if config is None:
        return None
    if _state_path(settings).exists():
        return json.loads(_state_path(settings).read_text())["tables"]
    return [name.strip() for name in config.get("table.include.list", "").split(",") if name.strip()]


def new_tables(captured: list[str], sent: list[str] | None) -> list[str]:
    """The captured tables whose rows Debezium has never sent, in capture order: none for a new
    connector (sent is None: its initial snapshot reads them all)."""
    if sent is None:
        return []
    done = set(sent)
    return [table for table in captured if table not in done]


def _record_sent(settings: Settings, tables: list[str]) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"tables": sorted(set(tables))}, indent=1) + "\n")
    os.replace(scratch, path)  # atomic: a crash leaves the old record or the new one


def _walsender_pid(settings: Settings) -> int | None:
    """The pid of the backend streaming the connector's slot (None if none streams)."""
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                           [settings.slot_name]).fetchone()
    return row[0] if row else None


def _new_task_streams(settings: Settings, registration: Registration) -> bool:
    """Does a task started after the PUT stream? A signal read by the old task (old config: no
    signal table, the new tables filtered out) would be skipped and lost, and Connect stops the
    old task only some time after the PUT. Proof: the slot is streamed by a walsender other than
    the one before the PUT, and a heartbeat was committed after we first saw that walsender
    (Debezium writes heartbeats from its streaming loop only). Call repeatedly: the first call
    that sees the new walsender only notes when. (pg_stat_replication.backend_start would say when
    it connected, but only to a superuser or pg_read_all_stats: the owner sees NULL.) Limit: if no
    walsender streamed at the PUT (a Connect worker just started), the first one seen counts, so a
    task that connected with the old config in the instant after the PUT could take the signal."""
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT active_pid, now() FROM pg_replication_slots WHERE slot_name = %s",
                           [settings.slot_name]).fetchone()
        if row is None or row[0] is None:
            return False
        pid, now = row
        if not registration.restarts:  # config unchanged: the running task has it already
            registration.new_pid, registration.new_pid_seen = pid, registration.since
        elif pid == registration.old_pid:
            return False
        if pid != registration.new_pid:
            registration.new_pid, registration.new_pid_seen = pid, now
            return False
        return bool(conn.execute(
            "SELECT EXISTS (SELECT 1 FROM public.debezium_heartbeat WHERE id = 1 AND ts > %s)",
            [registration.new_pid_seen]).fetchone()[0])


def send_snapshot_signal(settings: Settings, tables: list[str]) -> str:
    """Insert an execute-snapshot signal (incremental) for `tables`; returns its id."""
    signal_id = f"hrdv-{uuid.uuid4()}"
    data = json.dumps({"data-collections": tables, "type": "incremental"})
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {SIGNAL_TABLE} (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
                     [signal_id, data])
    return signal_id


def request_snapshots(settings: Settings, registration: Registration) -> bool:
    """Once a task with the new config streams, ask Debezium for an incremental snapshot of the
    registration's new tables and record them as sent. True when nothing is left to do; False
    while the new task does not stream yet (call again)."""
    if not registration.new:
        return True
    if not _new_task_streams(settings, registration):
        return False
    signal_id = send_snapshot_signal(settings, registration.new)
    _record_sent(settings, [*(tables_sent(settings) or []), *registration.new])
    print(f"connector: {len(registration.new)} new tables, incremental snapshot requested: "
          f"{', '.join(registration.new)} (signal {signal_id})", flush=True)
    registration.new = []
    return True


@retry(stop=stop_after_delay(30), wait=wait_fixed(1), retry=retry_if_exception_type(_Rebalancing))
def _put_config_retrying(settings: Settings) -> requests.Response:
    response = requests.put(_url(settings, "/config"), json=connector_config(settings), timeout=30)
    if response.status_code == 409:
        raise _Rebalancing(response)
    return response


def _put_config(settings: Settings) -> requests.Response:
    """PUT the config; a 409 (the worker is rebalancing, e.g. just back in its group) is retried
    for up to 30 s, then returned as it is."""
    try:
        return _put_config_retrying(settings)
    except RetryError as error:
        return error.last_attempt.exception().args[0]


def register_connector(settings: Settings, timeout: float = 120) -> None:
    """Create or update the connector, then wait until it really streams."""
    began = time.monotonic()
    registration = put_connector(settings)
    wait_streaming(settings, registration.since, timeout)
    if registration.new:
        _wait_for(lambda: request_snapshots(settings, registration), began + timeout,
                  f"connect: no task of connector {settings.connector_name} streams with the new "
                  f"config after {timeout:.0f} s; incremental snapshot of {registration.new} not requested")
    print(f"connect: connector {settings.connector_name} {registration.verb}, streaming after "
          f"{time.monotonic() - began:.1f} s", flush=True)


def _wait_for(done: Any, deadline: float, message: str) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise StackError(message)
        time.sleep(0.25)


def states(status: dict[str, Any]) -> list[str]:
    """The connector's state then each task's, from a /status answer ([] if it has none)."""
    if "connector" not in status:
        return []
    return [status["connector"].get("state", "?"), *(t.get("state", "?") for t in status.get("tasks", []))]


def describe(status: dict[str, Any]) -> str:
    """'RUNNING, task 0 RUNNING' or the reason the status could not be read."""
    if "error" in status:
        return str(status["error"])
    tasks = ", ".join(f"task {t['id']} {t['state']}" for t in status.get("tasks", []))
    return f"{status['connector']['state']}, {tasks or 'no tasks'}"


def restart_connector(settings: Settings, only_failed: bool) -> int:
    """POST /connectors/NAME/restart?includeTasks=true&onlyFailed=...; returns the HTTP status
    (202: restarts requested, 204: nothing to restart, 409: a rebalance is in progress)."""
    flag = "true" if only_failed else "false"
    response = requests.post(_url(settings, f"/restart?includeTasks=true&onlyFailed={flag}"),
                             timeout=30)
    return response.status_code


def streaming_state(settings: Settings, since: Any,
                    status: dict[str, Any] | None = None) -> tuple[bool, str]:
    """(streaming?, what the status says): RUNNING with its task, and a heartbeat committed
    after `since` while the slot is active (see wait_streaming). `status`: a /status answer
    already at hand. Never raises."""
    status = connector_health(settings) if status is None else status
    found = states(status)
    if not found or set(found) != {"RUNNING"} or len(found) < 2:
        return False, describe(status)
    try:
        fresh = _heartbeat_after(settings, since)
    except psycopg.Error as error:
        return False, f"RUNNING, but the CRM cannot be read ({str(error).strip()[:200]})"
    return (True, "RUNNING, streaming") if fresh else (False, "RUNNING, no fresh heartbeat yet")


class _NotYet(Exception):
    pass


def wait_streaming(settings: Settings, since: Any, timeout: float = 120) -> None:
    """Wait for proof of streaming, not just a RUNNING status.

    Right after a worker restart /status can still show the previous RUNNING record. What cannot
    be stale is the heartbeat: Debezium runs heartbeat.action.query only from its streaming loop,
    so debezium_heartbeat.ts newer than `since` (a database timestamp taken before we acted)
    together with an active replication slot means changes are flowing.
    """
    log = process.log_path("connect", settings)

    @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.25),
           retry=retry_if_exception_type(_NotYet), reraise=True)
    def check() -> None:
        _raise_if_failed(connector_health(settings), log)
        if not _heartbeat_after(settings, since):
            raise _NotYet

    try:
        check()
    except _NotYet:
        raise StackError(
            f"connect: connector {settings.connector_name} not streaming after {timeout:.0f} s "
            f"(status: {connector_health(settings)}); see {log}\n{process.log_tail(log)}"
        ) from None


def _raise_if_failed(status: dict[str, Any], log: Path) -> None:
    states = [status.get("connector", {}).get("state")]
    states += [task.get("state") for task in status.get("tasks", [])]
    if "FAILED" in states:
        traces = [t.get("trace", "") for t in [status.get("connector", {}), *status["tasks"]]]
        trace = next((t for t in traces if t), "")
        raise StackError(f"connect: connector {status.get('name')} FAILED; see {log}\n"
                         f"{trace[:3000]}")
    if states[0] != "RUNNING" or len(states) < 2 or set(states[1:]) != {"RUNNING"}:
        raise _NotYet


def _db_now(settings: Settings) -> Any:
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def _heartbeat_after(settings: Settings, since: Any) -> bool:
    query = """
        SELECT EXISTS (SELECT 1 FROM public.debezium_heartbeat WHERE id = 1 AND ts > %s)
           AND EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active)
    """
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        return bool(conn.execute(query, [since, settings.slot_name]).fetchone()[0])


def connector_health(settings: Settings) -> dict[str, Any]:
    """GET /connectors/NAME/status, or {"name", "error"} when it cannot be read. Never raises."""
    try:
        response = requests.get(_url(settings, "/status"), timeout=5)
        if response.status_code == 404:
            return {"name": settings.connector_name, "error": "not registered"}
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        return {"name": settings.connector_name, "error": str(exc)}


def source_offsets(settings: Settings) -> dict[str, Any]:
    """The connector's committed source position, from GET /connectors/NAME/offsets.

    Returns the offset of its single source partition, e.g.
    {"lsn": 27131264, "lsn_commit": 27131264, "txId": 771, "ts_usec": ...}; {} before the first
    offset flush. `lsn` matches the slot's confirmed_flush_lsn (as a number).
    """
    response = requests.get(_url(settings, "/offsets"), timeout=10)
    response.raise_for_status()
    offsets = response.json().get("offsets", [])
    return dict(offsets[0].get("offset") or {}) if offsets else {}


def delete_connector(settings: Settings) -> bool:
    """Remove the connector (the slot and publication stay in PostgreSQL). True if it existed."""
    response = requests.delete(_url(settings), timeout=30)
    if response.status_code == 404:
        return False
    response.raise_for_status()
    return True

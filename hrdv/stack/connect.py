"""The Debezium PostgreSQL connector on Kafka Connect: registration, status, source offsets.

The config is stack/debezium-crm.json with ${placeholders} filled from the settings, plus what
comes from hrdv/entities.py: table.include.list (every entity's table and the heartbeat table) and
column.exclude.list (personal data, dropped by Debezium before anything is written to Kafka). The
password never enters the file or Connect's config topic: it is written to a 0600 file in
$HRDV_HOME/conf and referenced through the worker's FileConfigProvider, so the REST API (which
echoes connector configs) shows only `${file:...}`.
"""
from __future__ import annotations

import json
import time
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


def put_connector(settings: Settings) -> tuple[str, Any]:
    """Create or update the connector (PUT is idempotent) without waiting for it.

    Returns ("registered" | "updated", the database's now() taken before the PUT): the `since`
    that wait_streaming and streaming_state take as proof of a fresh heartbeat.
    """
    _write_secret(settings)
    since = _db_now(settings)
    response = _put_config(settings)
    if response.status_code not in (200, 201):
        raise StackError(f"connect: PUT {_url(settings, '/config')} answered "
                         f"{response.status_code}: {response.text[:2000]}")
    return ("registered" if response.status_code == 201 else "updated"), since


class _Rebalancing(Exception):
    pass


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
    verb, since = put_connector(settings)
    wait_streaming(settings, since, timeout)
    print(f"connect: connector {settings.connector_name} {verb}, streaming after "
          f"{time.monotonic() - began:.1f} s", flush=True)


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

"""The one place that opens ClickHouse, and the schema HRDV keeps there.

Two kinds of DSN:
- ``chdb:///abs/path``: embedded chDB in this process. chDB lets only one process at a time open a
  data path, so every session first takes an inter-process file lock beside the data path and
  closes the engine on exit; sessions are meant to be short (open + work + close is ~30 ms).
- ``http(s)://...`` (anything clickhouse-connect accepts): a ClickHouse server; no lock.

The DDL lives in sql/clickhouse/*.sql (shared objects, one statement per file) and
sql/clickhouse/entity/*.sql.j2 (what every entity has, rendered from hrdv/entities.py by
hrdv/entity_sql.py), applied in the order of schema_statements().
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from string import Template
from urllib.parse import urlparse

import clickhouse_connect
import psutil
from clickhouse_connect.driver.client import Client
from filelock import FileLock, Timeout

from hrdv.settings import KAFKA_SASL_MECHANISM, Settings
from hrdv import entity_sql
from hrdv.sql import sql_text

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 300.0

# Order matters: the database, the shared UDFs (dbz_*) and each entity's checks, the queues, the
# tables (and their added columns), then the views along the path queue -> intake -> checked ->
# buffer | dead letters, upstream first, so that a schema created by an older version is migrated
# without a moment in which a consumed message reaches no view (sql/clickhouse/entity/intake_mv.sql.j2).
# What every entity has is generated from its description (hrdv/entity_sql.py); these files are
# the parts shared by all of them.
SHARED_FUNCTIONS: tuple[str, ...] = (
    "database.sql",
    "source_heartbeats.sql",  # read by dbz_newest_heartbeat
    "dbz_max_message_bytes.sql",
    "dbz_max_wal_bytes_per_second.sql",
    "dbz_newest_heartbeat.sql",
    "dbz_lsn.sql",
    "dbz_source_error.sql",
    "dbz_key_error.sql",
    "dbz_envelope_error.sql",
    "dbz_row_image.sql",
    "dbz_is_timestamp.sql",
)
SHARED_TABLES: tuple[str, ...] = ("dead_letters.sql", "dead_letters_key.sql", "dead_letter_replays.sql")
# The heartbeat topic has a queue and an intake like an entity, and its own two views.
HEARTBEAT_VIEWS: tuple[str, ...] = ("source_heartbeats_mv.sql", "debezium_heartbeat_dead_letters_mv.sql")

# Kafka-engine template parameters, as apply_schema's `kafka` argument names them. The SASL ones
# are required: the brokers accept no anonymous client (see hrdv/stack/kafka_access.py).
KAFKA_KEYS = ("broker_list", "topic_prefix", "group", "security_protocol", "sasl_mechanism",
              "sasl_username", "sasl_password")

# Longer messages are dead letters ('oversized', see dbz_envelope_error.sql): Kafka's default
# message.max.bytes. HRDV_MAX_MESSAGE_BYTES overrides it, applied with the schema.
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
# The WAL the source may write per second of commit time (dbz_source_error.sql): more than any
# PostgreSQL sustains. HRDV_MAX_WAL_BYTES_PER_S overrides it, applied with the schema.
DEFAULT_MAX_WAL_BYTES_PER_S = 1 << 30

_MEMORY_LOCATIONS = ("", "memory", ":memory:")


# --- DSNs ----------------------------------------------------------------------------------------
def is_embedded(dsn: str) -> bool:
    """True for chDB DSNs (in-process engine), False for ClickHouse servers."""
    return dsn.startswith("chdb:")


def chdb_path(dsn: str) -> Path | None:
    """The data path of a chdb:// DSN, or None for an in-memory engine."""
    if not is_embedded(dsn):
        raise ValueError(f"not a chdb:// DSN: {dsn!r}")
    parsed = urlparse(dsn)
    # clickhouse-connect reads chdb://memory/db as netloc=location, chdb:///abs/path as path.
    location = parsed.netloc.rpartition("@")[2] if parsed.netloc else parsed.path
    if location in _MEMORY_LOCATIONS:
        return None
    return Path(location).resolve()


def lock_path(data_path: Path) -> Path:
    """The lock file beside a chDB data path: <path>.lock (not inside, so wiping data keeps it)."""
    return data_path.with_name(data_path.name + ".lock")


# --- sessions ------------------------------------------------------------------------------------
_locks_guard = threading.Lock()


def _process_lock(path: Path) -> FileLock:
    # One shared, reentrant lock object per path in this process: chDB lets every thread of one
    # process use the same engine, so only other processes must wait; nested sessions (a helper
    # called inside a session) must not deadlock on their own process.
    with _locks_guard:
        return FileLock(path, thread_local=False, is_singleton=True)


def _want_file(data_path: Path, pid: int | None = None) -> Path:
    return data_path.with_name(f"{data_path.name}.want.{pid or os.getpid()}")


def _others_waiting(data_path: Path) -> bool:
    """True if another live process has announced that it waits for this chDB path."""
    for want in data_path.parent.glob(f"{data_path.name}.want.*"):
        suffix = want.name.rsplit(".", 1)[1]
        pid = int(suffix) if suffix.isdigit() else 0
        if pid == os.getpid():
            continue
        if pid and psutil.pid_exists(pid):
            return True
        want.unlink(missing_ok=True)  # left by a process that died while waiting
    return False


@contextmanager
def _chdb_lock(data_path: Path, timeout: float) -> Iterator[None]:
    data_path.parent.mkdir(parents=True, exist_ok=True)
    lock = _process_lock(lock_path(data_path))
    # Announce the wait, so that a process holding the path for long (the ingestor's
    # HeldSession) hands it over at its next pause instead of keeping it.
    want = _want_file(data_path)
    want.touch()
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise TimeoutError(
            f"chDB data path {data_path} stayed locked by another process for {timeout:.0f} s "
            f"(lock file {lock.lock_file}); chDB allows one process per data path, keep sessions short"
        ) from None
    finally:
        want.unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _client(dsn: str) -> Iterator[Client]:
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def session(dsn: str, lock_timeout: float = LOCK_TIMEOUT_S) -> Iterator[Client]:
    """A clickhouse-connect client for `dsn`, closed on exit (chDB: held under the path's lock).

    Raises TimeoutError if another process keeps a chDB path locked for `lock_timeout` seconds.
    """
    data_path = chdb_path(dsn) if is_embedded(dsn) else None
    if data_path is None:  # a server, or an in-memory chDB that no other process can see
        with _client(dsn) as client:
            yield client
        return
    with _chdb_lock(data_path, lock_timeout), _client(f"chdb://{data_path}") as client:
        yield client


class HeldSession:
    """One session kept open across many small pieces of work, for a process that works
    continuously (the ingestor), and handed over whenever another process waits for the path.

    Why not a session per batch: every open of a chDB path that holds tables costs about 1.5 MiB
    that chDB never gives back (measured: 200 opens of HRDV's schema, +300 MiB), whereas work in
    one open session levels off (1 000 inserts: flat at about 400 MiB). Short-lived processes
    (Dagster runs, tools) keep using session(); their few opens end with the process.
    """

    def __init__(self, dsn: str, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.dsn = dsn
        self.lock_timeout = lock_timeout
        self._data_path = chdb_path(dsn) if is_embedded(dsn) else None
        self._open: ExitStack | None = None
        self._client: Client | None = None
        self.handovers = 0

    @property
    def client(self) -> Client:
        """The open client, opening the session (and taking the lock) if needed."""
        if self._client is None:
            stack = ExitStack()
            self._client = stack.enter_context(session(self.dsn, self.lock_timeout))
            self._open = stack
        return self._client

    def hand_over_if_waited_for(self, max_wait_s: float = 5.0) -> bool:
        """If another process waits for the path, close and let it in; True if it did."""
        if self._client is None or self._data_path is None:
            return False
        if not _others_waiting(self._data_path):
            return False
        self.close()
        self.handovers += 1
        # Give the waiters the lock first: they drop their announcement once they hold it.
        deadline = time.monotonic() + max_wait_s
        while _others_waiting(self._data_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Close the client and release the path (also after a failed statement)."""
        if self._open is not None:
            self._open.close()
        self._open, self._client = None, None

    def __enter__(self) -> "HeldSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- SQL files -----------------------------------------------------------------------------------
def _quote_literal(value: object) -> str:
    # Template values are placed inside '...' in the SQL files: escape like a ClickHouse literal.
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def render_sql(name: str, parameters: Mapping[str, object] | None = None) -> str:
    """The statement in sql/clickhouse/<name>, with ${...} replaced by escaped `parameters`.

    Raises KeyError naming the missing parameter if the file needs one that was not given.
    """
    text = sql_text(f"clickhouse/{name}")
    if parameters is not None or "${" in text:
        escaped = {key: _quote_literal(value) for key, value in (parameters or {}).items()}
        try:
            text = Template(text).substitute(escaped)
        except KeyError as missing:
            raise KeyError(f"sql/clickhouse/{name} needs parameter {missing}") from None
    return text.strip().rstrip(";").strip()


def run_sql_file(client: Client, name: str, parameters: Mapping[str, object] | None = None) -> None:
    """Run the one statement of sql/clickhouse/<name> on an open client."""
    client.command(render_sql(name, parameters))


def kafka_engine(settings: Settings) -> dict[str, str]:
    """apply_schema's `kafka` argument from the settings: the same HRDV_KAFKA_* names as the
    embedded ingestor, and its principal (read the CDC topics, use the ingestion group)."""
    login = settings.kafka_login("ingest")
    return {"broker_list": settings.kafka_bootstrap, "topic_prefix": settings.topic_prefix,
            "group": settings.consumer_group,
            "security_protocol": settings.kafka_security_protocol.lower(),
            "sasl_mechanism": KAFKA_SASL_MECHANISM, "sasl_username": login.user,
            "sasl_password": login.password}


def kafka_parameters(kafka: Mapping[str, str]) -> dict[str, str]:
    """Map apply_schema's kafka dict (KAFKA_KEYS, see kafka_engine) to the template's names."""
    missing = [key for key in KAFKA_KEYS if not kafka.get(key)]
    if missing:
        raise ValueError(f"kafka settings lack {', '.join(missing)} (need {', '.join(KAFKA_KEYS)})")
    return {f"kafka_{key}": kafka[key] for key in KAFKA_KEYS}


def topic_of(topic_prefix: str) -> Callable[[str], str]:
    """CRM table -> Debezium topic (<prefix>.public.<table>), as Settings.topic names it."""
    return lambda table: f"{topic_prefix}.public.{table}"


def _substitute(text: str, parameters: Mapping[str, object]) -> str:
    if "${" not in text:
        return text
    escaped = {key: _quote_literal(value) for key, value in parameters.items()}
    try:
        return Template(text).substitute(escaped)
    except KeyError as missing:
        raise KeyError(f"ClickHouse DDL needs parameter {missing}") from None


def schema_parameters(kafka: Mapping[str, str] | None, max_bytes: int | None = None) -> dict[str, object]:
    """The DDL's ${...} values: the limits the rules use, and the Kafka engine's settings."""
    return {"max_message_bytes": max_bytes or max_message_bytes(),
            "max_wal_bytes_per_second": max_wal_bytes_per_second(),
            **(kafka_parameters(kafka) if kafka else {})}


def schema_statements(kafka: Mapping[str, str] | None, parameters: Mapping[str, object],
                      topic_prefix: str = "crm") -> list[tuple[str, str]]:
    """(label, statement) of HRDV's ClickHouse schema in application order; `kafka` chooses the
    queue flavour (Kafka engine, or the Null tables the embedded ingestor fills)."""
    files = lambda names: [(name, render_sql(name, parameters)) for name in names]  # noqa: E731
    topics = topic_of(kafka["topic_prefix"] if kafka else topic_prefix)
    statements = [
        *files(SHARED_FUNCTIONS),
        *entity_sql.clickhouse_functions(),
        *entity_sql.clickhouse_queues(topics, kafka=bool(kafka)),
        *entity_sql.clickhouse_tables(),
        *files(SHARED_TABLES),
        entity_sql.heartbeat_intake_view(),
        *files(HEARTBEAT_VIEWS),
        *entity_sql.clickhouse_views(),
    ]
    return [(label, _substitute(text, parameters)) for label, text in statements]


def _positive_env(variable: str, default: int) -> int:
    raw = os.environ.get(variable, str(default))
    if not raw.isdigit() or int(raw) == 0:
        raise ValueError(f"{variable} must be a whole number > 0, got {raw!r}")
    return int(raw)


def max_message_bytes() -> int:
    """The 'oversized' limit: HRDV_MAX_MESSAGE_BYTES, default DEFAULT_MAX_MESSAGE_BYTES."""
    return _positive_env("HRDV_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)


def max_wal_bytes_per_second() -> int:
    """dbz_source_error's WAL allowance: HRDV_MAX_WAL_BYTES_PER_S, default 1 GiB/s."""
    return _positive_env("HRDV_MAX_WAL_BYTES_PER_S", DEFAULT_MAX_WAL_BYTES_PER_S)


def apply_schema(dsn: str, kafka: Mapping[str, str] | None = None,
                 max_bytes: int | None = None) -> list[str]:
    """Create HRDV's ClickHouse objects if missing (idempotent); returns the statements' labels.

    `kafka` = kafka_engine(settings) (KAFKA_KEYS) makes every hrdv.<entity>_queue and
    hrdv.debezium_heartbeat_queue a Kafka-engine table (servers only); without it they are the
    Null-engine tables that hrdv.ingest fills.
    An existing queue is never converted: drop hrdv.<entity>_queue to switch flavours.
    Functions and views are replaced on every call, so they always match this repository's SQL
    (`max_bytes`, default max_message_bytes(), is the 'oversized' limit the rules use).
    """
    if kafka and is_embedded(dsn):
        raise ValueError("chDB cannot run Kafka-engine tables; use the embedded queue (kafka=None)")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    statements = schema_statements(kafka, schema_parameters(kafka, max_bytes))
    with session(dsn) as client:
        old_buffer = _set_aside_buffer_ordered_by_id(client)
        for label, statement in statements:
            try:
                client.command(statement)
            except Exception as error:
                raise RuntimeError(f"ClickHouse schema: {label} failed: {error}") from error
        if old_buffer:
            _move_rows(client, old_buffer, BUFFER)
    log.info("ClickHouse schema applied to %s (%s queue, %d statements)", dsn,
             "Kafka" if kafka else "embedded", len(statements))
    return [label for label, _ in statements]


BUFFER = "hrdv.interactions_buffer"


def _set_aside_buffer_ordered_by_id(client: Client) -> str | None:
    """Rename a buffer of the old layout (ORDER BY id, which merged away all but the newest
    version of an id per day) out of the way, so that the schema files create the new one
    (ORDER BY (id, lsn)); returns its new name. None when there is nothing to migrate."""
    rows = client.query("SELECT sorting_key FROM system.tables "
                        "WHERE database = 'hrdv' AND name = 'interactions_buffer'").result_rows
    if not rows or rows[0][0] != "id":
        return None
    aside = f"{BUFFER}_ordered_by_id"
    client.command(f"RENAME TABLE {BUFFER} TO {aside}")
    log.warning("ClickHouse: moving %s to the (id, lsn) layout", BUFFER)
    return aside


def _move_rows(client: Client, source: str, target: str) -> None:
    """Copy every row of `source` into `target` by column name, then drop `source`."""
    database, _, table = source.partition(".")
    columns = [name for (name,) in client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "ORDER BY position", parameters={"db": database, "t": table}).result_rows]
    listed = ", ".join(f"`{name}`" for name in columns)
    client.command(f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {source}")
    client.command(f"DROP TABLE {source}")


def table_engine(client: Client, qualified_name: str) -> str | None:
    """Engine of database.table, or None if it does not exist."""
    database, _, table = qualified_name.partition(".")
    rows = client.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return rows[0][0] if rows else None

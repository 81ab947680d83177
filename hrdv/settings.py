"""One place that turns environment variables into the stack's settings.

Every port, path and credential has a working default, so a plain checkout runs; a second stack
runs beside the first with another HRDV_HOME and HRDV_PORT_BASE.

PostgreSQL logins, one per job (least privilege; the grants are in sql/*/grants*.sql):
- owner (HRDV_PG_USER, `hrdv`): owns the databases and their schemas, applies DDL, and writes the
  CRM as the CRM application does;
- Debezium (HRDV_DEBEZIUM_USER): REPLICATION, SELECT on the captured tables, and the heartbeat row;
- writer (HRDV_WRITER_USER): the pipeline's reads and writes of staging and marts, no DDL;
- reporting (HRDV_REPORTING_USER): SELECT on the marts, for dashboards;
- Dagster (HRDV_DAGSTER_PG_USER): owns only the `dagster` database (run and event storage);
- source reader (HRDV_SOURCE_READER_USER): SELECT on the captured CRM tables, for the drift check
  and `hrdv resync` (in production, point HRDV_SOURCE_DSN at a CRM standby).
Each password comes from its HRDV_*_PASSWORD variable, else from $HRDV_HOME/secrets.env, where a
missing one is generated on first use (0600, never in the repository).
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _int_env(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


@dataclass(frozen=True)
class Login:
    """A PostgreSQL role that logs in, with its password."""

    user: str
    password: str = ""

    def __repr__(self) -> str:  # never print a password in a traceback or a log
        return f"Login(user={self.user!r})"


@dataclass(frozen=True)
class Settings:
    home: Path
    pg_port: int
    kafka_port: int
    kafka_controller_port: int
    connect_port: int
    dagster_port: int
    pg_user: str
    pg_password: str = field(repr=False)
    clickhouse_dsn: str
    topic_prefix: str
    consumer_group: str
    connector_name: str
    window_minutes: int
    partitions_start: str
    debezium: Login = Login("hrdv_debezium")
    writer: Login = Login("hrdv_writer")
    reporting: Login = Login("hrdv_reporting")
    dagster: Login = Login("hrdv_dagster")
    source_reader: Login = Login("hrdv_source_reader")

    # --- derived locations -------------------------------------------------------------
    @property
    def pg_data(self) -> Path:
        return self.home / "postgres"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def jars(self) -> Path:
        return REPO_ROOT / ".hrdv-jars"

    @property
    def owner(self) -> Login:
        return Login(self.pg_user, self.pg_password)

    def pg_dsn(self, database: str, login: Login | None = None) -> str:
        """libpq URL of a database here, as the owner unless another login is given."""
        login = login or self.owner
        return f"postgresql://{login.user}:{login.password}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def crm_dsn(self) -> str:
        """The CRM as its application (the owner): the generators, migrations, admin checks."""
        return self.pg_dsn("crm")

    @property
    def source_dsn(self) -> str:
        """The CRM read-only, as the drift check and `hrdv resync` read it."""
        return _env("HRDV_SOURCE_DSN", self.pg_dsn("crm", self.source_reader))

    @property
    def hrdv_dsn(self) -> str:
        """The warehouse as the pipeline's writer: staging and marts, no DDL."""
        return self.pg_dsn("hrdv", self.writer)

    @property
    def hrdv_admin_dsn(self) -> str:
        """The warehouse as its owner: schema changes (DDL) and grants."""
        return self.pg_dsn("hrdv")

    @property
    def reporting_dsn(self) -> str:
        """The marts, read-only: what dashboards (Superset) connect with."""
        return self.pg_dsn("hrdv", self.reporting)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    @property
    def slot_name(self) -> str:
        return f"{self.connector_name.replace('-', '_')}_slot"

    def topic(self, table: str) -> str:
        """Debezium's topic for a CRM table: <prefix>.<schema>.<table>."""
        return f"{self.topic_prefix}.public.{table}"

    def child_env(self) -> dict[str, str]:
        """Environment for the processes the stack starts (Dagster, ingestor, generator)."""
        env = dict(os.environ)
        env.update(
            HRDV_HOME=str(self.home),
            HRDV_PG_HOST="127.0.0.1",
            HRDV_PG_PORT=str(self.pg_port),
            HRDV_KAFKA_PORT=str(self.kafka_port),
            HRDV_KAFKA_CONTROLLER_PORT=str(self.kafka_controller_port),
            HRDV_CONNECT_PORT=str(self.connect_port),
            HRDV_DAGSTER_PORT=str(self.dagster_port),
            HRDV_PG_USER=self.pg_user,
            HRDV_DAGSTER_PG_USER=self.dagster.user,
            HRDV_DAGSTER_PG_PASSWORD=self.dagster.password,
            HRDV_CLICKHOUSE_DSN=self.clickhouse_dsn,
            HRDV_TOPIC_PREFIX=self.topic_prefix,
            HRDV_CONSUMER_GROUP=self.consumer_group,
            HRDV_CONNECTOR_NAME=self.connector_name,
            HRDV_WINDOW_MINUTES=str(self.window_minutes),
            HRDV_PARTITIONS_START=self.partitions_start,
            HRDV_CRM_DSN=self.crm_dsn,
            HRDV_DSN=self.hrdv_dsn,
            HRDV_REPORTING_DSN=self.reporting_dsn,
            HRDV_SOURCE_DSN=self.source_dsn,
            HRDV_KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            HRDV_CONNECT_URL=self.connect_url,
            DAGSTER_HOME=str(self.dagster_home),
            # A run of many windows stores its per-window materialisations in batched inserts.
            DAGSTER_EVENT_BATCH_SIZE=os.environ.get("DAGSTER_EVENT_BATCH_SIZE", "1000"),
        )
        return env


def _password(home: Path, variable: str) -> str:
    """$variable if set, else its line in $HRDV_HOME/secrets.env, generated there if missing.

    Under a file lock: the processes of a stack may load their settings at the same moment, and
    two of them must not generate two different passwords.
    """
    explicit = os.environ.get(variable, "").strip()
    if explicit:
        return explicit
    home.mkdir(parents=True, exist_ok=True)
    secrets_file = home / "secrets.env"
    with FileLock(str(home / ".secrets.lock")):
        stored = _read_env_file(secrets_file).get(variable)
        if stored:
            return stored
        generated = secrets.token_urlsafe(18)
        secrets_file.touch(mode=0o600)
        secrets_file.chmod(0o600)
        with open(secrets_file, "a") as out:
            out.write(f"{variable}={generated}\n")
        return generated


def _login(home: Path, name: str, default_user: str) -> Login:
    """The role HRDV_<name>_USER (default_user) with HRDV_<name>_PASSWORD."""
    return Login(_env(f"HRDV_{name}_USER", default_user), _password(home, f"HRDV_{name}_PASSWORD"))


def load() -> Settings:
    home = Path(_env("HRDV_HOME", str(REPO_ROOT / ".hrdv"))).resolve()
    # Below 32768: Linux hands out 32768-60999 as ephemeral ports to outgoing connections, and a
    # server port in that range can be taken by some client socket just before the server binds.
    base = _int_env("HRDV_PORT_BASE", 25400)
    window = _int_env("HRDV_WINDOW_MINUTES", 15)
    if window <= 0 or 60 % window:
        raise SystemExit(f"HRDV_WINDOW_MINUTES must divide 60 (1, 5, 15, 30, 60 ...), got {window}")
    return Settings(
        home=home,
        pg_port=_int_env("HRDV_PG_PORT", base + 32),
        kafka_port=_int_env("HRDV_KAFKA_PORT", base + 92),
        kafka_controller_port=_int_env("HRDV_KAFKA_CONTROLLER_PORT", base + 93),
        connect_port=_int_env("HRDV_CONNECT_PORT", base + 83),
        dagster_port=_int_env("HRDV_DAGSTER_PORT", base + 30),
        pg_user=_env("HRDV_PG_USER", "hrdv"),
        pg_password=_password(home, "HRDV_PG_PASSWORD"),
        clickhouse_dsn=_env("HRDV_CLICKHOUSE_DSN", f"chdb://{home / 'clickhouse'}"),
        topic_prefix=_env("HRDV_TOPIC_PREFIX", "crm"),
        consumer_group=_env("HRDV_CONSUMER_GROUP", "hrdv-clickhouse"),
        connector_name=_env("HRDV_CONNECTOR_NAME", "hrdv-crm"),
        window_minutes=window,
        partitions_start=_env("HRDV_PARTITIONS_START", "2026-11-01-00:00"),
        debezium=_login(home, "DEBEZIUM", "hrdv_debezium"),
        writer=_login(home, "WRITER", "hrdv_writer"),
        reporting=_login(home, "REPORTING", "hrdv_reporting"),
        dagster=_login(home, "DAGSTER_PG", "hrdv_dagster"),
        source_reader=_login(home, "SOURCE_READER", "hrdv_source_reader"),
    )

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
  and `hrdv resync` (in production, point HRDV_SOURCE_DSN at a CRM standby);
- Superset (HRDV_SUPERSET_PG_USER, `hrdv_superset`): owns only the `superset` database (Superset's
  own metadata: users, charts, dashboards); the dashboards read the marts as the reporting login.
Apache Superset (hrdv/stack/superset.py):
- admin (HRDV_SUPERSET_ADMIN_USER, `admin`): Superset's administrator, who logs in to the UI and
  applies the dashboards; its password is re-set from HRDV_SUPERSET_ADMIN_PASSWORD at bootstrap;
- HRDV_SUPERSET_SECRET_KEY signs Superset's sessions and encrypts the database passwords it stores:
  changing it makes the stored passwords unreadable.
Kafka principals (SASL/SCRAM-SHA-512; the ACLs are in hrdv/stack/kafka_access.py):
- admin (HRDV_KAFKA_ADMIN_USER): super user; creates the other principals and the ACLs, and is
  the broker's inter-broker login;
- Connect (HRDV_KAFKA_CONNECT_USER): the only writer of the CDC topics, the heartbeat topic and
  Connect's internal topics;
- ingestor (HRDV_KAFKA_INGEST_USER): reads the CDC topics in its consumer group;
- reader (HRDV_KAFKA_READER_USER): reads and describes topics, describes groups (Dagster's lag
  sensor and completeness checks, `hrdv status`, capture, tests);
- controller (HRDV_KAFKA_CONTROLLER_USER): SASL/PLAIN between the broker and the KRaft controller
  on the localhost-only controller listener (KRaft controllers cannot use SCRAM).
Each password comes from its HRDV_*_PASSWORD variable, else from $HRDV_HOME/secrets.env, where a
missing one is generated on first use (0600, never in the repository).
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
    """A PostgreSQL role or a Kafka principal that logs in, with its password."""

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
    superset_port: int
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
    superset: Login = Login("hrdv_superset")  # PostgreSQL: owner of the `superset` database
    superset_admin: Login = Login("admin")    # Superset's administrator account
    superset_secret_key: str = field(default="", repr=False)
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    kafka_ca_file: str = ""  # PEM bundle that signed the brokers' certificates (SASL_SSL)
    kafka_logins: dict[str, Login] = field(default_factory=dict, repr=False, hash=False)

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

    def sqlalchemy_uri(self, database: str, login: Login | None = None, password: str | None = None) -> str:
        """SQLAlchemy URL (psycopg2) of a database here, as Superset connects: as the owner unless
        another login is given; `password` replaces the login's (e.g. Superset's mask XXXXXXXXXX)."""
        login = login or self.owner
        secret = quote(login.password if password is None else password, safe="")
        return (f"postgresql+psycopg2://{quote(login.user, safe='')}:{secret}"
                f"@127.0.0.1:{self.pg_port}/{database}")

    @property
    def superset_metadata_uri(self) -> str:
        """Superset's own metadata database, as its login (hrdv/stack/superset.py)."""
        return self.sqlalchemy_uri("superset", self.superset)

    @property
    def superset_url(self) -> str:
        return f"http://127.0.0.1:{self.superset_port}"

    @property
    def superset_home(self) -> Path:
        """Superset's data folder (SUPERSET_HOME) and its bootstrap stamp."""
        return self.home / "superset"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def kafka_login(self, principal: str) -> Login:
        """The Kafka login of a principal: admin, connect, ingest, reader or controller."""
        try:
            return self.kafka_logins[principal]
        except KeyError:
            raise ValueError(f"no Kafka principal {principal!r}; "
                             f"known: {', '.join(self.kafka_logins)}") from None

    def kafka_password_source(self, principal: str) -> str:
        """Where a principal's password comes from, for error messages."""
        return password_source(self.home, f"HRDV_KAFKA_{principal.upper()}_PASSWORD")

    def kafka_client(self, principal: str, **extra: Any) -> dict[str, Any]:
        """librdkafka config of a client that logs in as `principal`, plus `extra` settings.

        Every Kafka client of the project (ingestor, Dagster, tools, tests) is built from this."""
        login = self.kafka_login(principal)
        return kafka_client_config(self.kafka_bootstrap, login.user, login.password,
                                   self.kafka_security_protocol, self.kafka_ca_file,
                                   self.kafka_password_source(principal), **extra)

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
            HRDV_SUPERSET_PORT=str(self.superset_port),
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
            HRDV_KAFKA_SECURITY_PROTOCOL=self.kafka_security_protocol,
            HRDV_KAFKA_CA_FILE=self.kafka_ca_file,
            # Dagster's Kafka resource reads these through EnvVar (read-only principal).
            HRDV_KAFKA_READER_USER=self.kafka_login("reader").user,
            HRDV_KAFKA_READER_PASSWORD=self.kafka_login("reader").password,
            HRDV_CONNECT_URL=self.connect_url,
            DAGSTER_HOME=str(self.dagster_home),
            # A run of many windows stores its per-window materialisations in batched inserts.
            DAGSTER_EVENT_BATCH_SIZE=os.environ.get("DAGSTER_EVENT_BATCH_SIZE", "1000"),
        )
        return env


KAFKA_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
# principal -> default user name; HRDV_KAFKA_<PRINCIPAL>_USER / _PASSWORD override.
KAFKA_PRINCIPALS = {"admin": "hrdv-admin", "connect": "hrdv-connect", "ingest": "hrdv-ingest",
                    "reader": "hrdv-reader", "controller": "hrdv-controller"}


def _auth_failure_logger(user: str, bootstrap: str, password_from: str) -> Callable[[Any], None]:
    """An error_cb that says once, plainly, which principal failed to log in and why to look at
    its password; librdkafka itself only retries and reports brokers down."""
    reported = False

    def on_error(error: Any) -> None:
        nonlocal reported
        if reported or error.name() != "_AUTHENTICATION":
            return
        reported = True
        logging.getLogger("hrdv.kafka").error(
            "Kafka principal %r cannot authenticate at %s (%s); its password comes from %s",
            user, bootstrap, error.str(), password_from or "the client's configuration")

    return on_error


def kafka_client_config(bootstrap: str, user: str, password: str,
                        protocol: str = "SASL_PLAINTEXT", ca_file: str = "",
                        password_from: str = "", **extra: Any) -> dict[str, Any]:
    """The one place that spells out a librdkafka client's connection and SASL settings."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
        "sasl.mechanism": KAFKA_SASL_MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "error_cb": _auth_failure_logger(user, bootstrap, password_from),
    }
    if protocol == "SASL_SSL" and ca_file:
        config["ssl.ca.location"] = ca_file
    config.update(extra)
    return config


def password_source(home: Path, variable: str) -> str:
    if os.environ.get(variable, "").strip():
        return f"the environment variable {variable}"
    return f"{variable} in {home / 'secrets.env'}"


def default_kafka_ca_file(home: Path) -> Path:
    """The embedded broker's self-signed certificate, its clients' CA under SASL_SSL."""
    return home / "conf" / "tls" / "ca.pem"


def _kafka_ca_file(home: Path, protocol: str) -> str:
    default = str(default_kafka_ca_file(home)) if protocol == "SASL_SSL" else ""
    return _env("HRDV_KAFKA_CA_FILE", default)


def _kafka_protocol() -> str:
    value = _env("HRDV_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT").upper()
    if value not in KAFKA_PROTOCOLS:
        raise SystemExit(f"HRDV_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_PROTOCOLS)}, "
                         f"got {value!r}")
    return value


def _password(home: Path, variable: str, nbytes: int = 18) -> str:
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
        generated = secrets.token_urlsafe(nbytes)
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
        superset_port=_int_env("HRDV_SUPERSET_PORT", base + 88),
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
        superset=_login(home, "SUPERSET_PG", "hrdv_superset"),
        superset_admin=_login(home, "SUPERSET_ADMIN", "admin"),
        # 42 random bytes, as Superset's documentation asks (`openssl rand -base64 42`).
        superset_secret_key=_password(home, "HRDV_SUPERSET_SECRET_KEY", nbytes=42),
        kafka_security_protocol=_kafka_protocol(),
        kafka_ca_file=_kafka_ca_file(home, _kafka_protocol()),
        kafka_logins={name: _login(home, f"KAFKA_{name.upper()}", user)
                      for name, user in KAFKA_PRINCIPALS.items()},
    )

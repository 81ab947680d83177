"""The local PostgreSQL 15 cluster: the CRM source (logical decoding for Debezium) and the marts.

The cluster runs as the OS user `postgres` (initdb refuses root) with its data in
settings.pg_data, its socket in settings.run_dir/pg and its log in settings.logs/postgres.log.
TCP is 127.0.0.1 only, with scram passwords; on the socket, root and postgres may connect as the
`postgres` superuser (peer auth), which is how the bootstrap creates the role and databases.
"""
from __future__ import annotations

import getpass
import os
import pwd
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from hrdv import entities
from hrdv.crm import reference
from hrdv.settings import REPO_ROOT, Login, Settings
from hrdv.stack.connect import SIGNAL_TABLE, captured_tables, publication_name
from hrdv.stack.process import StackError, log_tail

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCHEMA_SQL = REPO_ROOT / "sql" / "crm" / "schema.sql"
GRANTS_CRM = REPO_ROOT / "sql" / "crm" / "grants.sql"
GRANTS_SOURCE_READER = REPO_ROOT / "sql" / "crm" / "grants_source_reader.sql"


def ensure_installed() -> None:
    """Install Debian's postgresql-15 if its server binary is missing (needs root)."""
    if (PG_BIN / "postgres").exists():
        return
    print("postgres: installing postgresql-15 with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql-15"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _os_user() -> str:
    """The OS user owning the cluster: `postgres` when we are root (initdb refuses root)."""
    return "postgres" if os.geteuid() == 0 else getpass.getuser()


def _socket_dir(settings: Settings) -> Path:
    return settings.run_dir / "pg"


def _log(settings: Settings) -> Path:
    return settings.logs / "postgres.log"


def _as_pg(argv: list[str]) -> list[str]:
    user = _os_user()
    return argv if user == getpass.getuser() else ["runuser", "-u", user, "--", *argv]


def _run(argv: list[str], what: str, log: Path | None = None) -> str:
    done = subprocess.run(_as_pg(argv), capture_output=True, text=True)
    if done.returncode != 0:
        hint = f"; see {log}\n{log_tail(log)}" if log else ""
        raise StackError(f"postgres: {what} failed:\n{done.stdout}{done.stderr}{hint}")
    return done.stdout


def _own(path: Path) -> None:
    entry = pwd.getpwnam(_os_user())
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Give others +x on every ancestor, so the postgres user can reach a data folder under a
    root-owned tree such as /work/main/.hrdv (listing stays closed: only x is added)."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _prepare_dirs(settings: Settings) -> None:
    for folder in (settings.home, settings.logs, settings.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    _make_traversable(settings.pg_data)
    for folder in (settings.pg_data, _socket_dir(settings)):
        folder.mkdir(mode=0o700, exist_ok=True)
        _own(folder)
    _log(settings).touch()
    _own(_log(settings))


def _initdb(settings: Settings) -> None:
    if (settings.pg_data / "PG_VERSION").exists():
        return
    _run(
        [str(PG_BIN / "initdb"), "-D", str(settings.pg_data), "-U", "postgres", "-E", "UTF8",
         "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256"],
        "initdb",
    )
    with open(settings.pg_data / "postgresql.conf", "a") as conf:
        conf.write("\ninclude_if_exists 'hrdv.conf'\n")


def _write_config(settings: Settings) -> None:
    """Rewritten on every start, so a changed port or path in the settings takes effect."""
    conf = f"""# Written by hrdv/stack/postgres.py on every start; edits are lost.
port = {settings.pg_port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{_socket_dir(settings)}'
# Debezium reads changes through a logical replication slot (pgoutput).
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
password_encryption = 'scram-sha-256'
shared_buffers = 128MB
# Fewer forced checkpoints during bulk loads (10 million customers write several GB of WAL).
max_wal_size = 4GB
# A slot whose consumer is gone (Connect down for hours) retains WAL without bound; past this much
# PostgreSQL invalidates the slot rather than fill the CRM's disk. About 0.9 KiB of WAL per change
# (bench/bench_slot_retention.py): 16 GB is 5 h of downtime at 1 000 changes/s, 10 days at 20/s.
# An invalidated slot means a new snapshot (README, "Failure modes and recovery").
max_slot_wal_keep_size = 16GB
# The commit time of every row's current version (pg_xact_commit_timestamp(xmin)): the drift check
# (hrdv/drift.py) judges a row only once its last change committed before what staging holds.
# 10 bytes per transaction in pg_commit_ts; takes effect at the next restart of PostgreSQL.
track_commit_timestamp = on
"""
    hba = """# Written by hrdv/stack/postgres.py on every start; edits are lost.
# Socket: the OS users root and postgres may be the superuser postgres (bootstrap, admin).
local   all          postgres                     peer map=hrdv
# TCP on loopback only, passwords for everyone (the app role, Debezium's replication link).
host    all          all         127.0.0.1/32     scram-sha-256
host    replication  all         127.0.0.1/32     scram-sha-256
"""
    ident = f"hrdv root postgres\nhrdv postgres postgres\nhrdv {_os_user()} postgres\n"
    for name, text in (("hrdv.conf", conf), ("pg_hba.conf", hba), ("pg_ident.conf", ident)):
        path = settings.pg_data / name
        path.write_text(text)
        _own(path)


def _running(settings: Settings) -> bool:
    if not (settings.pg_data / "PG_VERSION").exists():
        return False
    done = subprocess.run(_as_pg([str(PG_BIN / "pg_ctl"), "-D", str(settings.pg_data), "status"]),
                          capture_output=True)
    return done.returncode == 0


def running(settings: Settings) -> bool:
    """True if this HRDV_HOME's cluster runs (pg_ctl status)."""
    return _running(settings)


def start(settings: Settings) -> None:
    """initdb if needed, start the server if it is not running, then bootstrap (idempotent)."""
    ensure_installed()
    began = time.monotonic()
    if _running(settings):
        print(f"postgres: already running on 127.0.0.1:{settings.pg_port}", flush=True)
    else:
        _prepare_dirs(settings)
        _initdb(settings)
        _write_config(settings)
        _run([str(PG_BIN / "pg_ctl"), "-D", str(settings.pg_data), "-l", str(_log(settings)),
              "-w", "-t", "60", "start"], "pg_ctl start", _log(settings))
        print(f"postgres: started on 127.0.0.1:{settings.pg_port} in "
              f"{time.monotonic() - began:.1f} s", flush=True)
    bootstrap(settings)


def stop(settings: Settings) -> None:
    """Fast shutdown (rolls back open transactions, keeps everything committed)."""
    if not _running(settings):
        print("postgres: not running", flush=True)
        return
    _run([str(PG_BIN / "pg_ctl"), "-D", str(settings.pg_data), "-m", "fast", "-w", "-t", "60",
          "stop"], "pg_ctl stop", _log(settings))
    print("postgres: stopped", flush=True)


def admin_connect(settings: Settings, dbname: str = "postgres") -> psycopg.Connection:
    """Superuser connection over the unix socket (peer auth), autocommit."""
    return psycopg.connect(host=str(_socket_dir(settings)), port=settings.pg_port,
                           user="postgres", dbname=dbname, autocommit=True)


def recreate_database(settings: Settings, name: str, template: str | None = None) -> str:
    """Drop database `name` (its sessions ended) and create it anew, owned by the owner login,
    empty or as a copy of `template`; returns its DSN (tests, benches, scratch databases)."""
    with admin_connect(settings) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        create = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(settings.pg_user))
        if template is not None:
            create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
        admin.execute(create)
    return settings.pg_dsn(name)


def bootstrap(settings: Settings) -> None:
    """Roles, databases, CRM schema and Debezium's grants. Safe to run again: every step checks
    or uses IF NOT EXISTS, and the passwords are re-set so they always match the settings."""
    with admin_connect(settings) as conn:
        for login, attributes in _roles(settings):
            _ensure_role(conn, login, attributes)
        _ensure_database(conn, "crm", settings.pg_user)
        _ensure_database(conn, "hrdv", settings.pg_user)
        _ensure_database(conn, "dagster", settings.dagster.user)
        # Superset's metadata (users, charts, dashboards), owned by Superset's login alone.
        _ensure_database(conn, "superset", settings.superset.user)
        # crm and hrdv get theirs from their grants files; PUBLIC may connect anywhere by default.
        conn.execute("REVOKE ALL ON DATABASE dagster FROM PUBLIC")
        conn.execute("REVOKE ALL ON DATABASE superset FROM PUBLIC")
    with admin_connect(settings, "dagster") as conn:
        _hand_over_tables(conn, settings.dagster.user)
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL.read_text())
        reference.apply(conn)  # territories, channels, topics, queues, tariffs
        # DEFAULT (the key) rather than FULL: an UPDATE's event carries the full new row in
        # `after`, which is all the warehouse needs; a DELETE's `before` is real only in its key
        # (Debezium fills the other NOT NULL columns with placeholders), and downstream a delete
        # is applied by key. FULL would double the WAL per update.
        conn.execute("ALTER TABLE interactions REPLICA IDENTITY DEFAULT")
        _grant_debezium(conn, settings)


def _roles(settings: Settings) -> list[tuple[Login, str]]:
    """Every login of the stack with its role attributes (see hrdv/settings.py)."""
    return [
        # CREATEDB so tests and benches can make scratch databases.
        (settings.owner, "LOGIN CREATEDB NOREPLICATION"),
        # Only Debezium streams from a replication slot.
        (settings.debezium, "LOGIN REPLICATION"),
        (settings.writer, "LOGIN NOREPLICATION"),
        (settings.reporting, "LOGIN NOREPLICATION"),
        (settings.dagster, "LOGIN NOREPLICATION"),
        (settings.superset, "LOGIN NOREPLICATION"),
        (settings.source_reader, "LOGIN NOREPLICATION"),
    ]


def _ensure_role(conn: psycopg.Connection, login: Login, attributes: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [login.user]).fetchone()
    verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
    conn.execute(sql.SQL("{} ROLE {} {} PASSWORD {}").format(
        verb, sql.Identifier(login.user), sql.SQL(attributes), sql.Literal(login.password)))


def _ensure_database(conn: psycopg.Connection, db: str, owner: str) -> None:
    """Create the database, or give an existing one to `owner` (stacks from before the roles)."""
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone():
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(db), sql.Identifier(owner)))
        return
    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
        sql.Identifier(db), sql.Identifier(owner)))


def _hand_over_tables(conn: psycopg.Connection, owner: str) -> None:
    """Give the database's tables and sequences to `owner`: Dagster's storage tables of a stack
    started before Dagster had a role of its own belong to the stack's owner."""
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "S": "SEQUENCE"}
    rows = conn.execute(
        """SELECT c.relkind, n.nspname, c.relname FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')
             AND pg_get_userbyid(c.relowner) <> %s
             -- a serial's sequence follows its table (and cannot be given away alone)
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype IN ('a', 'i'))""", [owner]).fetchall()
    for kind, schema, name in rows:
        conn.execute(sql.SQL("ALTER {} {}.{} OWNER TO {}").format(
            sql.SQL(kinds[kind]), sql.Identifier(schema), sql.Identifier(name),
            sql.Identifier(owner)))


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def _columns_only(role: str) -> sql.Composable:
    """For each captured table holding personal data: REVOKE SELECT on it, then GRANT SELECT on
    every column but the personal ones (hrdv.entities), so `role` can never read them."""
    statements = [
        sql.SQL("REVOKE SELECT ON {table} FROM {role}; GRANT SELECT ({columns}) ON {table} TO {role};").format(
            table=_table(entity.table), role=sql.Identifier(role),
            columns=sql.SQL(", ").join(sql.Identifier(column.name) for column in entity.staged))
        for entity in entities.ENTITIES if entity.personal
    ]
    return sql.SQL("\n").join(statements)


def _grant_debezium(conn: psycopg.Connection, settings: Settings) -> None:
    """Debezium's publication (made by the owner of its tables) and sql/crm/grants.sql.

    The publication holds the captured tables (hrdv.entities via connect.captured_tables(), the
    connector's table.include.list) and Debezium's signal table: Debezium reads signals from the
    stream, so its table must be published although it is not in table.include.list. SET TABLE
    makes an existing publication follow the list (tables added to ENTITIES join it on the next
    start; `hrdv up` then has their existing rows read, see hrdv/stack/connect.py)."""
    tables = sql.SQL(", ").join(_table(name) for name in captured_tables())
    published = sql.SQL(", ").join(_table(name) for name in [*captured_tables(), SIGNAL_TABLE])
    publication = sql.Identifier(publication_name(settings))
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s",
                          [publication_name(settings)]).fetchone()
    statement = "ALTER PUBLICATION {} SET TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
    conn.execute(sql.SQL(statement).format(publication, published))
    apply_grants(conn, GRANTS_CRM, debezium=settings.debezium.user, tables=tables,
                 columns_only=_columns_only(settings.debezium.user))
    # The source reader keeps table-wide SELECT: the drift check reads each row's system columns
    # (xmin for its commit time, xmax for a change in progress), which column privileges cannot
    # grant. It is a pipeline login on the CRM side only; what it reads never leaves the check.
    apply_grants(conn, GRANTS_SOURCE_READER, reader=settings.source_reader.user, tables=tables,
                 columns_only=sql.SQL(""))


def apply_grants(conn: psycopg.Connection, path: Path, **names: str | sql.Composable) -> None:
    """Run a grants file whose {placeholders} are role names (quoted here as identifiers) or
    ready-made SQL fragments."""
    values = {key: sql.Identifier(value) if isinstance(value, str) else value
              for key, value in names.items()}
    conn.execute(sql.SQL(path.read_text()).format(**values))


SLOTS_SQL = """
SELECT slot_name, plugin, database, active, confirmed_flush_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_wal_bytes
FROM pg_replication_slots ORDER BY slot_name
"""


def health(settings: Settings) -> dict[str, Any]:
    """up, version, port, data dir, and each replication slot with its confirmed position and
    the WAL it holds back (bytes between the current WAL position and the slot's restart_lsn)."""
    report: dict[str, Any] = {"up": False, "port": settings.pg_port,
                              "data_dir": str(settings.pg_data), "log": str(_log(settings))}
    try:
        with psycopg.connect(settings.pg_dsn("postgres"), connect_timeout=3) as conn:
            report["version"] = conn.execute("SHOW server_version").fetchone()[0]
            cur = conn.execute(SLOTS_SQL)
            names = [c.name for c in cur.description]
            report["slots"] = [dict(zip(names, row)) for row in cur.fetchall()]
            report["up"] = True
    except psycopg.Error as exc:
        report["error"] = str(exc).strip()
    return report

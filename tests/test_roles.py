"""Least privilege on the real stack: each login can do its job and nothing around it.

- Debezium streams as its own REPLICATION role, reads the captured tables but not their personal
  columns, writes only the heartbeat row and its signal table's watermarks, and cannot reach the
  warehouse;
- the pipeline's writer reads and writes staging and marts, but changes no schema and cannot
  reach the CRM;
- the reporting login reads the marts and nothing else;
- the source reader (drift check, resync) reads the captured CRM tables (whole rows: it needs their
  system columns), and
  nothing else;
- Dagster's login owns only its storage database;
- the owner no longer has REPLICATION; every password lives in a 0600 secrets file outside the
  repository.
"""
from __future__ import annotations

import stat
import subprocess

import psycopg
import pytest
from psycopg import errors

from hrdv.settings import REPO_ROOT, Login, Settings

pytestmark = pytest.mark.stack

DENIED = (errors.InsufficientPrivilege,)


def _can_connect(stack: Settings, database: str, login: Login) -> bool:
    try:
        with psycopg.connect(stack.pg_dsn(database, login), connect_timeout=5):
            return True
    except psycopg.OperationalError as exc:
        assert "permission denied" in str(exc), exc
        return False


def _denied(dsn: str, statement: str) -> bool:
    """True if PostgreSQL refuses `statement` for lack of privilege (nothing is committed)."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement)
        except DENIED:
            return True
        finally:
            conn.rollback()
    return False


def test_each_login_reaches_only_its_databases(stack: Settings) -> None:
    reach = {
        login.user: {db for db in ("crm", "hrdv", "dagster", "superset") if _can_connect(stack, db, login)}
        for login in (stack.debezium, stack.writer, stack.reporting, stack.dagster, stack.source_reader,
                      stack.superset)
    }
    assert reach == {
        stack.debezium.user: {"crm"},
        stack.writer.user: {"hrdv"},
        stack.reporting.user: {"hrdv"},
        stack.dagster.user: {"dagster"},
        stack.source_reader.user: {"crm"},
        stack.superset.user: {"superset"},  # Superset's metadata; it reads the marts as reporting
    }


def test_source_reader_reads_captured_tables_only(stack: Settings) -> None:
    with psycopg.connect(stack.source_dsn) as conn:
        conn.execute("SELECT count(*) FROM interactions").fetchone()
        conn.execute("SELECT id, region_code, status FROM customers LIMIT 1").fetchone()
        conn.execute("SELECT id, customer_id, consent_sms FROM contact_persons LIMIT 1").fetchone()
    for statement in ("UPDATE interactions SET status = status WHERE id = -1",
                      "INSERT INTO debezium_heartbeat (id, ts) VALUES (-1, now())",
                      # (personal columns stay readable to this login: the drift check needs each
                      # row's xmin/xmax, which column privileges cannot grant; it reads by key and
                      # compares staged columns only, and nothing it reads leaves the check)
                      "SELECT * FROM debezium_signal",  # Debezium's alone
                      "CREATE TABLE public.reader_scratch (id int)"):
        assert _denied(stack.source_dsn, statement), statement


# Captured tables, but never their personal columns (hrdv.entities: column.exclude.list, and only
# the other columns granted).
PERSONAL_DATA_READS = ("SELECT full_name FROM customers", "SELECT * FROM customers",
                       "SELECT full_name FROM contact_persons", "SELECT phone FROM contact_persons",
                       "SELECT email FROM contact_persons")


def test_every_entity_is_published_and_readable_by_debezium(stack: Settings) -> None:
    """The publication holds exactly the captured tables and the signal table; Debezium may
    read each captured table's staged columns (what its snapshots select)."""
    from hrdv import entities
    from hrdv.stack import connect

    with psycopg.connect(stack.crm_dsn) as conn:
        published = {f"{schema}.{table}" for schema, table in conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
            [connect.publication_name(stack)]).fetchall()}
        existing = set(conn.execute("SELECT table_name || '.' || column_name FROM "
                                    "information_schema.columns WHERE table_schema = 'public'").fetchall())
    assert published == {*entities.captured_tables(), connect.SIGNAL_TABLE}
    with psycopg.connect(stack.pg_dsn("crm", stack.debezium)) as conn:
        for entity in entities.ENTITIES:  # (a column added by a CRM migration may not exist yet)
            columns = ", ".join(c.name for c in entity.staged if (f"{entity.name}.{c.name}",) in existing)
            conn.execute(f"SELECT {columns} FROM {entity.table} LIMIT 1").fetchall()


def test_debezium_streams_as_its_replication_role(stack: Settings) -> None:
    with psycopg.connect(stack.crm_dsn) as conn:
        streaming = conn.execute(
            "SELECT usename FROM pg_stat_replication WHERE application_name LIKE 'Debezium%%'"
            " OR usename = %s", [stack.debezium.user]).fetchall()
        replication = dict(conn.execute(
            "SELECT rolname, rolreplication FROM pg_roles WHERE rolname = ANY(%s)",
            [[stack.pg_user, stack.debezium.user, stack.writer.user]]).fetchall())
    assert streaming and {user for (user,) in streaming} == {stack.debezium.user}
    assert replication == {stack.pg_user: False, stack.debezium.user: True, stack.writer.user: False}


def test_debezium_reads_captured_tables_and_writes_only_the_heartbeat(stack: Settings) -> None:
    dsn = stack.pg_dsn("crm", stack.debezium)
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT count(*) FROM interactions").fetchone()
        conn.execute("UPDATE debezium_heartbeat SET ts = now() WHERE id = 1")
        # its incremental snapshots' watermarks
        conn.execute("INSERT INTO debezium_signal VALUES ('test-open', 'snapshot-window-open', NULL)")
        conn.rollback()
    assert _denied(dsn, "UPDATE interactions SET status = status WHERE id = -1")
    assert _denied(dsn, "DELETE FROM interactions WHERE id = -1")
    for statement in PERSONAL_DATA_READS:  # captured, but never their personal data
        assert _denied(dsn, statement), statement
    assert _denied(dsn, "DELETE FROM debezium_signal")
    assert _denied(dsn, "CREATE TABLE public.debezium_scratch (id int)")


def test_writer_writes_staging_and_marts_but_no_schema(stack: Settings) -> None:
    with psycopg.connect(stack.hrdv_dsn) as conn:
        conn.execute("DELETE FROM mart.interaction_kpi WHERE window_start < '1900-01-01'")
        conn.execute("UPDATE staging.interactions SET status = status WHERE id = -1")
        conn.execute("DELETE FROM provisional.interactions WHERE id = -1")  # the ingestor's copy
        conn.execute("CREATE TEMP TABLE scratch (id int) ON COMMIT DROP")
        conn.rollback()
    for statement in ("CREATE TABLE staging.scratch (id int)", "DROP TABLE mart.interaction_kpi",
                      "ALTER TABLE staging.interactions ADD COLUMN scratch int",
                      "TRUNCATE staging.interactions"):
        assert _denied(stack.hrdv_dsn, statement), statement


def test_reporting_reads_marts_only(stack: Settings) -> None:
    with psycopg.connect(stack.reporting_dsn) as conn:
        conn.execute("SELECT count(*) FROM mart.interaction_kpi").fetchone()
        conn.execute("SELECT count(*) FROM mart.kpi_interactions_window_live").fetchone()  # final + provisional
        # The dashboards' views, which name references through staging as their owner.
        conn.execute("SELECT count(*) FROM mart.report_interactions_window").fetchone()
        conn.execute("SELECT count(*) FROM mart.report_dimension_labels").fetchone()
    for statement in ("SELECT count(*) FROM staging.interactions",
                      "SELECT id, region_code FROM staging.customers LIMIT 1",  # customers (names are never staged)
                      "SELECT count(*) FROM staging.regions",
                      "SELECT count(*) FROM provisional.interactions",
                      "DELETE FROM mart.interaction_kpi",
                      "INSERT INTO mart.interaction_kpi (window_start) VALUES (now())",
                      "CREATE TEMP TABLE scratch (id int)"):
        assert _denied(stack.reporting_dsn, statement), statement


def test_dagster_owns_its_storage_only(stack: Settings) -> None:
    with psycopg.connect(stack.pg_dsn("postgres")) as conn:
        owners = dict(conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database"
            " WHERE datname IN ('crm', 'hrdv', 'dagster')").fetchall())
    assert owners == {"crm": stack.pg_user, "hrdv": stack.pg_user, "dagster": stack.dagster.user}


def test_passwords_only_in_a_private_secrets_file(stack: Settings) -> None:
    secrets_file = stack.home / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    tracked = subprocess.run(["git", "grep", "-l", "-F", "-e", stack.pg_password, "-e",
                              stack.writer.password, "-e", stack.debezium.password],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert tracked.stdout == "", f"a password is in tracked files: {tracked.stdout}"
    if secrets_file.resolve().is_relative_to(REPO_ROOT):  # e.g. the default ./.hrdv
        ignored = subprocess.run(["git", "check-ignore", "-q", str(secrets_file)], cwd=REPO_ROOT)
        assert ignored.returncode == 0, f"{secrets_file} is inside the repository and not ignored"

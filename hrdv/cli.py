"""`hrdv`: start, stop and inspect the local stack; generate CRM load.

    hrdv up          everything: PostgreSQL, Kafka, Connect + Debezium, ClickHouse (chDB),
                     the ingestor, the CRM generator, Dagster (UI + daemon with the sensor) and
                     Apache Superset (the dashboards)
    hrdv status      health of each component, its memory, and the ingestion lag
    hrdv down        stop everything `up` started (data stays in $HRDV_HOME)
    hrdv generate    write CRM changes at a rate
    hrdv dead-letters  list the messages ClickHouse could not parse; replay them after a fix
    hrdv drift       compare staged rows with the CRM now (the staging check does it each window)
    hrdv resync      re-read chosen rows from the CRM into the pipeline
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
import psycopg

from hrdv import generator
from hrdv.dead_letters import dead_letters
from hrdv.catalog_cli import catalog_group
from hrdv.dashboards.cli import dashboards_group
from hrdv.drift import drift_command, resync_command
from hrdv.entities import ENTITIES
from hrdv.settings import REPO_ROOT, Settings, load
from hrdv.sql import sql_text

if TYPE_CHECKING:
    from hrdv.stack.up import Outcome

PYTHON = sys.executable
# Started by `up`, stopped by `down` in reverse order.
SERVICES = ["ingestor", "generator", "dagster-daemon", "dagster-webserver"]


def _step(message: str) -> float:
    click.echo(f"==> {message}", err=False)
    return time.monotonic()


def _bin(name: str) -> str:
    return str(Path(PYTHON).parent / name)


def init_stores(settings: Settings, customers: int, history_days: int = 0, seed: int = 1) -> None:
    """Schemas of the operational store and ClickHouse; customers (and history) in the CRM.

    With history_days > 0 an empty CRM gets the bulk initial load (hrdv/crm/bulk_load.py);
    otherwise only customers 1..N. Runs before the connector exists, so that Debezium's
    snapshot, not its stream, carries the loaded rows.
    """
    from hrdv import catalog, catalog_sql, entity_sql
    from hrdv.clickhouse import apply_schema
    from hrdv.crm import bulk_load
    from hrdv.stack import postgres

    with psycopg.connect(settings.hrdv_admin_dsn, autocommit=True) as conn:
        conn.execute(sql_text("postgres/hrdv_schema.sql"))
        for _, statement in entity_sql.staging_ddl():
            conn.execute(statement)
        conn.execute(catalog_sql.ddl(catalog.load()))  # the KPI marts and the indexes they read
        postgres.apply_grants(conn, REPO_ROOT / "sql" / "postgres" / "hrdv_grants.sql",
                              writer=settings.writer.user, reporting=settings.reporting.user)
    with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
        empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM customers)").fetchone()[0]
        if history_days > 0 and empty:
            bulk_load.load(settings.crm_dsn, customers=customers, seed=seed, history_days=history_days)
        else:
            generator.seed_customers(conn, customers=customers, seed=seed)
    apply_schema(settings.clickhouse_dsn, kafka=None)


def start_infrastructure(settings: Settings, customers: int, history_days: int = 0) -> None:
    from hrdv.stack import connect, kafka, postgres

    postgres.ensure_installed()
    postgres.start(settings)
    kafka.ensure_jars(settings)
    kafka.start_broker(settings)
    kafka.start_connect(settings)
    init_stores(settings, customers, history_days)
    connect.register_connector(settings)


def _dagster_commands(settings: Settings) -> dict[str, list[str]]:
    """The Dagster daemon and webserver, with DAGSTER_HOME prepared for them."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    link = settings.dagster_home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(REPO_ROOT / "dagster.yaml")
    workspace = str(REPO_ROOT / "workspace.yaml")
    return {
        "dagster-daemon": [_bin("dagster-daemon"), "run", "-w", workspace],
        "dagster-webserver": [_bin("dagster-webserver"), "-h", "127.0.0.1",
                              "-p", str(settings.dagster_port), "-w", workspace],
    }


def start_dagster(settings: Settings) -> None:
    """Start the Dagster daemon and webserver if down; return once the UI answers."""
    from hrdv.stack import process

    for name, argv in _dagster_commands(settings).items():  # `up` again starts only what is down
        if process.is_running(name, settings):
            click.echo(f"{name}: already running")
        else:
            process.spawn(name, argv, settings, env=settings.child_env(), cwd=REPO_ROOT)
    process.wait_for_port(settings.dagster_port, 120, "dagster-webserver")


def _spawn_python(settings: Settings, name: str, args: list[str]) -> None:
    from hrdv.stack import process

    if process.is_running(name, settings):
        click.echo(f"{name}: already running")
        return
    process.spawn(name, [PYTHON, "-u", "-m", *args], settings, env=settings.child_env(), cwd=REPO_ROOT)


def _service_starter(settings: Settings, rate: float) -> Callable[[str], None]:
    """spawn(name) for `up`: starts one of SERVICES if it is down, without waiting for it."""
    from hrdv.stack import process

    def spawn(name: str) -> None:
        if name == "ingestor":
            _spawn_python(settings, name, ["hrdv.ingest"])
        elif name == "generator":
            _spawn_python(settings, name, ["hrdv.cli", "generate", "--rate", str(rate)])
        elif not process.is_running(name, settings):
            process.spawn(name, _dagster_commands(settings)[name], settings,
                          env=settings.child_env(), cwd=REPO_ROOT)

    return spawn


def bring_up(settings: Settings, customers: int = 20_000, history_days: int = 7, rate: float = 20.0,
             dagster: bool = True, timeout: float = 180.0, superset: bool = False) -> list["Outcome"]:
    """Start every component of the stack that is down, then wait up to `timeout` s until all
    are healthy; returns each one's outcome (never stops at the first slow or failed one).
    Superset only with `superset` (`hrdv up` asks for it unless --no-superset)."""
    from hrdv.stack import up as stack_up

    services = ["ingestor"] + (["generator"] if rate > 0 else [])
    services += ["dagster-daemon", "dagster-webserver"] if dagster else []
    plan = stack_up.plan_for(
        settings, init_stores=lambda: init_stores(settings, customers, history_days),
        spawn=_service_starter(settings, rate), services=services, with_superset=superset)
    stack_up.start_all(plan)
    _step(f"started what was down; waiting up to {timeout:.0f} s for every component to be healthy")
    return stack_up.verify_all(plan, timeout)


@click.group()
def main() -> None:
    """HRDV local stack and tools (settings from HRDV_* environment variables)."""


@main.command()
@click.option("--rate", default=20.0, show_default=True, help="CRM changes per second; 0: no generator")
@click.option("--customers", default=20_000, show_default=True, help="customers in a new CRM")
@click.option("--history-days", default=7, show_default=True,
              help="days of history the bulk load gives a new CRM (0: customers only)")
@click.option("--dagster/--no-dagster", default=True, show_default=True, help="start the Dagster UI and daemon")
@click.option("--superset/--no-superset", default=True, show_default=True,
              help="start Apache Superset (the dashboards)")
@click.option("--timeout", default=180.0, show_default=True,
              help="seconds to wait, once everything is started, for every component to be healthy")
def up(rate: float, customers: int, history_days: int, dagster: bool, superset: bool,
       timeout: float) -> None:
    """Start the whole stack with data flowing, the Dagster UI and Superset (the dashboards) on.

    Starts every component that is down, waits for all to be healthy and prints each one's
    state; exits 1 if any is still not healthy, saying which.
    """
    from hrdv.stack import up as stack_up

    settings = load()
    started = _step(f"starting the stack in {settings.home}")
    outcomes = bring_up(settings, customers, history_days, rate, dagster, timeout, superset=superset)
    click.echo("\n" + stack_up.table(outcomes))
    failed = [o.component for o in outcomes if not o.ok]
    if failed:
        click.echo(f"\nHRDV is NOT fully up after {time.monotonic() - started:.0f} s: "
                   f"{', '.join(failed)} not healthy (logs in {settings.logs}). "
                   f"Run `./hrdv.sh up` again once the cause is fixed.", err=True)
        sys.exit(1)
    if superset:
        _apply_dashboards(settings)
    click.echo(
        f"\nHRDV is up in {time.monotonic() - started:.0f} s.\n"
        f"  Dagster UI   http://127.0.0.1:{settings.dagster_port}  (sensor crm_kafka_lag_sensor)\n"
        + (_superset_lines(settings) if superset else "") +
        f"  PostgreSQL   127.0.0.1:{settings.pg_port}  databases crm, hrdv, dagster, superset; "
        f"passwords in {settings.home / 'secrets.env'}\n"
        f"               logins: {settings.pg_user} (owner), {settings.writer.user} (pipeline), "
        f"{settings.reporting.user} (dashboards, read-only), {settings.debezium.user} (replication), "
        f"{settings.dagster.user} (Dagster storage),\n"
        f"               {settings.source_reader.user} (CRM read-only: drift check, resync), "
        f"{settings.superset.user} (Superset's metadata)\n"
        f"  Kafka        {settings.kafka_bootstrap} ({settings.kafka_security_protocol}, SCRAM-SHA-512)   "
        f"Connect {settings.connect_url}\n"
        f"               principals: {_kafka_principals(settings)}\n"
        f"  ClickHouse   {settings.clickhouse_dsn}\n"
        f"  Logs         {settings.logs}\n"
        f"Windows are {settings.window_minutes} minutes: the first run starts when the current one closes.\n"
        f"The open window's indicators move every 10 s in mart.kpi_<family>_window_live (column provisional;\n"
        f"sensor provisional_kpi_sensor).\n"
        f"`./hrdv.sh status` shows health, lag and each stage's freshness, `./hrdv.sh down` stops everything."
    )


def _superset_lines(settings: Settings) -> str:
    """Superset's address and its administrator's login, for the end of `up`."""
    from hrdv.settings import password_source

    admin = settings.superset_admin
    return (f"  Superset     {settings.superset_url}  (dashboards)\n"
            f"               user      {admin.user}\n"
            f"               password  {admin.password}  "
            f"(from {password_source(settings.home, 'HRDV_SUPERSET_ADMIN_PASSWORD')})\n")


def _apply_dashboards(settings: Settings) -> None:
    """Bring Superset's dashboards in line with dashboards/*.yaml, once the stack is healthy."""
    from hrdv.dashboards.cli import apply_dashboards
    from hrdv.dashboards.superset_api import SupersetError

    try:
        apply_dashboards(settings)
    except SupersetError as error:
        click.echo(f"dashboards: NOT applied: {error}\n  retry with `./hrdv.sh dashboards apply`", err=True)


def _kafka_principals(settings: Settings) -> str:
    roles = {"admin": "super user", "connect": "writes CDC", "ingest": "reads CDC",
             "reader": "read-only tools"}
    return ", ".join(f"{settings.kafka_login(name).user} ({role})" for name, role in roles.items())


def stop_stack(settings: Settings) -> None:
    """Stop everything `up` starts, in reverse order; the data stays."""
    from hrdv.stack import kafka, postgres, process, superset

    if superset.stop(settings):  # started last by `up`
        click.echo("superset: stopped")
    for name in reversed(SERVICES):
        if process.stop(name, settings):
            click.echo(f"{name}: stopped")
    kafka.stop_connect(settings)
    kafka.stop_broker(settings)
    postgres.stop(settings)


def fresh_stack(customers: int, dagster: bool = False, history_days: int = 0,
                superset: bool = False) -> Settings:
    """Wipe $HRDV_HOME and start a new stack there with the ingestor (tests, benches).

    The stack's settings are exported to this process too: Dagster's resources read them.
    history_days > 0 gives the CRM the bulk load `up` gives it (staff, history). `superset`
    also starts Superset (its metadata bootstrapped anew: about 20 s more) and waits until it answers.
    """
    stop_stack(load())  # leftovers of an interrupted run
    shutil.rmtree(load().home, ignore_errors=True)
    settings = load()  # a new password for the new cluster
    os.environ.update(settings.child_env())
    start_infrastructure(settings, customers=customers, history_days=history_days)
    _spawn_python(settings, "ingestor", ["hrdv.ingest"])
    if dagster:
        start_dagster(settings)
    if superset:
        from hrdv.stack import superset as superset_stack

        superset_stack.start(settings)
        superset_stack.wait_healthy(settings)
    return settings


@main.command()
def down() -> None:
    """Stop everything `up` started; the data stays."""
    stop_stack(load())
    click.echo("stack stopped")


def _memory_mib(pid: int | None) -> str:
    from hrdv.stack import process

    rss = process.tree_rss_mib(pid)
    return "-" if rss is None else f"{rss:.0f} MiB resident"


def _postgres_line(health: dict) -> str:
    if not health.get("up"):
        return f"DOWN  (log {health.get('log')})"
    slots = ", ".join(
        f"slot {slot['slot_name']} {'active' if slot['active'] else 'INACTIVE'}, "
        f"WAL retained {int(slot['retained_wal_bytes'] or 0) / 2**20:.1f} MiB"
        for slot in health.get("slots", [])
    )
    return f"up    port {health['port']}  PostgreSQL {health['version'].split()[0]}  {slots}"


def _jvm_line(health: dict, where: str) -> str:
    if not health.get("up"):
        return f"DOWN  (log {health.get('log')})"
    return f"up    {health.get(where)}  pid {health['pid']}  {health.get('rss_mib', 0):.0f} MiB"


def _superset_line(health: dict) -> str:
    memory = "-" if health["rss_mib"] is None else f"{health['rss_mib']:.0f} MiB resident"
    if health["up"]:
        return f"up    {health['url']}  pid {health['pid']}  {memory}"
    if health["pid"] is None:
        return f"not running  ({health['url']}; log {health['log']})"
    return f"DOWN  {health['error']}  {memory}  (log {health['log']})"


def _connector_line(status: dict, connect_up: bool) -> str:
    if not connect_up:
        return "DOWN  (Kafka Connect is down)"
    if "error" in status:
        return f"DOWN  ({status['error']})"
    tasks = ", ".join(f"task {t['id']} {t['state']}" for t in status.get("tasks", []))
    return f"{status['connector']['state']:5} {status['name']}  {tasks}"


@main.command()
def status() -> None:
    """Health, memory and lag of every component."""
    from hrdv.stack import connect, kafka, postgres, process, superset
    from resources.kafka import KafkaResource

    settings = load()
    jvms = kafka.health(settings)
    click.echo(f"{'postgres':18} {_postgres_line(postgres.health(settings))}")
    click.echo(f"{'kafka':18} {_jvm_line(jvms['broker'], 'bootstrap')}")
    click.echo(f"{'connect':18} {_jvm_line(jvms['connect'], 'url')}")
    connect_up = bool(jvms["connect"].get("up"))
    connector = connect.connector_health(settings) if connect_up else {}
    click.echo(f"{'connector':18} {_connector_line(connector, connect_up)}")
    for name in SERVICES:
        pid = process.pid_of(name, settings)
        state = f"up    pid {pid}  {_memory_mib(pid)}" if pid else "not running"
        if pid and name == "dagster-daemon":  # the tree swings with transient children
            split = process.daemon_split_mib(pid)
            state += "  (" + ", ".join(f"{part} {value:.0f} MiB" for part, value in split.items()
                                        if value is not None) + ")"
        click.echo(f"{name:18} {state}")
    click.echo(f"{'superset':18} {_superset_line(superset.health(settings))}")
    if not jvms["broker"].get("up"):
        click.echo(f"{'lag':18} unknown: the Kafka broker is down (`./hrdv.sh up` starts it)")
        return
    resource = KafkaResource.of_stack(settings)
    try:
        lags = resource.lag([settings.topic(entity.name) for entity in ENTITIES])
        behind = [lag for lag in lags if lag.lag]
        click.echo(f"{'lag':18} {sum(lag.lag for lag in lags)} messages over {len(lags)} partitions of "
                   f"{len({lag.topic for lag in lags})} topics (end {sum(lag.end_offset for lag in lags)}, "
                   f"group {settings.consumer_group})")
        for lag in behind:
            click.echo(f"{'':18}   {lag.name}: {lag.lag} behind (end {lag.end_offset}, committed {lag.committed})")
        click.echo(f"{'heartbeat':18} newest CRM heartbeat commit in Kafka: {resource.latest_heartbeat()}")
    except Exception as error:  # noqa: BLE001 - status reports, it does not crash
        click.echo(f"{'lag':18} unavailable ({error})")
    _freshness(settings, resource)


def _freshness(settings: Settings, kafka) -> None:
    """Each stage's newest CRM commit (or window end) and its age, in pipeline order."""
    from hrdv import provisional

    try:
        with psycopg.connect(settings.source_dsn, connect_timeout=5) as crm:
            crm_heartbeat = crm.execute("SELECT max(ts) FROM public.debezium_heartbeat").fetchone()[0]
        with psycopg.connect(settings.hrdv_dsn, connect_timeout=5) as hrdv:
            found = provisional.stages(hrdv, crm_heartbeat, kafka.latest_heartbeat())
    except Exception as error:  # noqa: BLE001 - status reports, it does not crash
        click.echo(f"{'freshness':18} unavailable ({error})")
        return
    click.echo(f"{'freshness':18} newest CRM commit (or window end) each stage holds, and its age:")
    for name, stage in found.items():
        click.echo(f"{'':18}   {stage.describe():54} {provisional.STAGES[name]}")


@main.command()
@click.option("--mode", type=click.Choice(["live", "replay", "simple"]), default="live", show_default=True,
              help="live: realistic changes now; replay: a generated day, faster than real time; "
                   "simple: the tests' interactions-only generator")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="changes per second (live, simple)")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="seconds; default: until stopped")
@click.option("--max-changes", type=click.IntRange(min=1), default=None, help="stop after this many changes")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="replay: the day to play (Moscow time); default: today")
@click.option("--speedup", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="replay: times faster than real time")
@click.option("--customers", type=click.IntRange(min=1), default=None,
              help="first make sure the CRM has this many customers (without history)")
@click.option("--seed", default=1, show_default=True, help="same seed, same sequence of changes")
@click.option("--reference-share", type=click.FloatRange(min=0, max=1), default=None,
              help="live, replay: share of steps that change a customer, contact person, employee, "
                   "queue, branch or service area (default 0.01: about 1.3 % of all changes)")
def generate(mode: str, rate: float, duration: float | None, max_changes: int | None, day,
             speedup: float, customers: int | None, seed: int, reference_share: float | None) -> None:
    """Write CRM changes: interactions, work orders and claims through their lifecycles, and now
    and then customers, contact persons, employees, queues, branches and service areas."""
    import dataclasses
    from datetime import date

    from hrdv.crm import live
    from hrdv.crm.behaviour import Behaviour

    settings = load()
    if customers:
        with psycopg.connect(settings.crm_dsn, autocommit=True) as conn:
            generator.seed_customers(conn, customers=customers, seed=seed)
    target = settings.crm_dsn.rsplit("@", 1)[-1]
    behaviour = Behaviour()
    if reference_share is not None:
        behaviour = dataclasses.replace(behaviour, reference_change_share=reference_share)
    try:
        if mode == "simple":
            click.echo(f"generator (simple): {rate} changes/s into {target}")
            stats = generator.run(settings.crm_dsn, rate=rate, duration=duration, max_changes=max_changes, seed=seed)
            click.echo(f"generator: done, {stats.changes} changes in {stats.transactions} transactions")
        elif mode == "live":
            click.echo(f"generator (live): {rate} changes/s into {target}")
            live.run_live(settings.crm_dsn, rate=rate, duration=duration, max_changes=max_changes, seed=seed,
                          behaviour=behaviour)
        else:
            played = day.date() if day else date.today()
            click.echo(f"generator (replay): {played} at {speedup}x into {target}")
            live.run_replay(settings.crm_dsn, played, speedup=speedup, seed=seed, max_changes=max_changes,
                            behaviour=behaviour)
    except KeyboardInterrupt:
        return


@main.group()
def crm() -> None:
    """The CRM source: bulk initial load and source-model migrations."""


@crm.command("load")
@click.option("--customers", type=click.IntRange(min=1), required=True, help="customers to create")
@click.option("--history-days", type=click.IntRange(min=1), default=30, show_default=True,
              help="days of interactions, work orders and claims before --as-of")
@click.option("--seed", default=1, show_default=True, help="same seed, same data")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="parallel PostgreSQL connections")
@click.option("--as-of", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]), default=None,
              help="end of the history (default: the current hour); fix it to reproduce a load")
@click.option("--truncate", is_flag=True, help="empty the loaded tables first")
def crm_load(customers: int, history_days: int, seed: int, jobs: int, as_of, truncate: bool) -> None:
    """Bulk-load CUSTOMERS customers with their history into the CRM (server-side, in chunks).

    Meant for a CRM that Debezium does not stream yet: a running connector would carry every
    loaded row as a change event (it warns if a replication slot exists).
    """
    from datetime import timezone

    from hrdv.crm import bulk_load

    settings = load()
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=timezone.utc)
    bulk_load.load(settings.crm_dsn, customers=customers, seed=seed, history_days=history_days,
                   jobs=jobs, as_of=as_of, truncate=truncate)


@crm.command("migrate")
@click.argument("name")
def crm_migrate(name: str) -> None:
    """Apply source-model migration NAME (e.g. 001) to the CRM while everything runs.

    The live generator notices it and writes the new column and status value from then on.
    """
    from hrdv.crm import migrate

    settings = load()
    try:
        ran = migrate.apply(settings.crm_dsn, name)
    except (FileNotFoundError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="NAME") from None
    click.echo(f"migration {name}: {'applied' if ran else 'already applied, nothing to do'}")


main.add_command(dead_letters)
main.add_command(drift_command)
main.add_command(resync_command)
main.add_command(catalog_group)
main.add_command(dashboards_group)

if __name__ == "__main__":
    main()

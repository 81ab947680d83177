"""Test settings: the suite runs its own stack on its own ports and home, beside any dev stack.

Reporting windows are 1 minute long in tests (the same partitions definition, shorter), so that a
window closes within a minute instead of fifteen.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

os.environ.setdefault("HRDV_HOME", "/tmp/hrdv-test")
os.environ.setdefault("HRDV_PORT_BASE", "28400")
# The stacks some modules start beside the suite's: the CRM's own PostgreSQL, a broker for the
# ingestor's tests, a TLS broker for Kafka's authentication tests.
os.environ.setdefault("HRDV_CRM_TEST_HOME", "/tmp/hrdv-crm-tests")
os.environ.setdefault("HRDV_CRM_TEST_PG_PORT", "26632")
os.environ.setdefault("HRDV_INGEST_TEST_HOME", "/tmp/hrdv-ch")
os.environ.setdefault("HRDV_INGEST_TEST_PORT_BASE", "27400")
os.environ.setdefault("HRDV_TLS_TEST_PORT_BASE", "27700")
os.environ.setdefault("HRDV_WINDOW_MINUTES", "1")


def _own_stacks_per_worker() -> None:
    """pytest-xdist worker N (N > 0) gets homes and ports of its own: each home with '-gwN', each
    port 4 000 lower (gw1's base 24400; all below the ephemeral range, 32768 on), so the workers'
    stacks run side by side. Worker 0, or a run without xdist, keeps the values above."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    if not worker:
        return
    for name in ("HRDV_HOME", "HRDV_CRM_TEST_HOME", "HRDV_INGEST_TEST_HOME"):
        os.environ[name] = f"{os.environ[name]}-gw{worker}"
    for name in ("HRDV_PORT_BASE", "HRDV_CRM_TEST_PG_PORT", "HRDV_INGEST_TEST_PORT_BASE", "HRDV_TLS_TEST_PORT_BASE"):
        os.environ[name] = str(int(os.environ[name]) - 4000 * worker)


_own_stacks_per_worker()
# One to two hours of 1-minute windows before the suite starts (keys are Moscow time): enough for
# windows far apart, few enough that a run of all of them (every mart's first catch-up) is short.
os.environ.setdefault("HRDV_PARTITIONS_START", (datetime.now(ZoneInfo("Europe/Moscow")) - timedelta(hours=1))
                      .strftime("%Y-%m-%d-%H:00"))

import dataclasses
import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hrdv.settings import Settings, load


@pytest.fixture(scope="session")
def clickhouse_template(tmp_path_factory) -> Path:
    """A chDB data path with HRDV's ClickHouse schema, made once: applying the schema of every
    entity takes a second or two, copying the files a few milliseconds."""
    from hrdv import clickhouse

    path = tmp_path_factory.mktemp("clickhouse-template") / "clickhouse"
    clickhouse.apply_schema(f"chdb://{path}")
    return path


@pytest.fixture
def dsn(tmp_path, clickhouse_template: Path) -> Iterator[str]:
    """A fresh chDB data path with HRDV's ClickHouse schema (embedded queue)."""
    shutil.copytree(clickhouse_template, tmp_path / "clickhouse", symlinks=True)
    yield f"chdb://{tmp_path / 'clickhouse'}"


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real stack (PostgreSQL, Kafka, Connect + Debezium, chDB, ingestor), fresh, on test ports."""
    from hrdv.cli import fresh_stack, stop_stack

    settings = load()
    try:
        settings = fresh_stack(customers=500)
        yield settings
    finally:
        stop_stack(settings)


@pytest.fixture(scope="session")
def crm_postgres() -> Iterator[Settings]:
    """A PostgreSQL of its own (no Kafka) for the CRM's tests, stopped afterwards.

    Its settings are derived, not exported: the suite's environment keeps pointing at the
    shared stack, whatever order the tests run in.
    """
    from hrdv.stack import postgres

    settings = dataclasses.replace(load(), home=Path(os.environ["HRDV_CRM_TEST_HOME"]),
                                   pg_port=int(os.environ["HRDV_CRM_TEST_PG_PORT"]),
                                   pg_password="hrdv-crm-tests")
    postgres.start(settings)
    try:
        yield settings
    finally:
        postgres.stop(settings)


@pytest.fixture(scope="session")
def crm_cluster(crm_postgres: Settings) -> Settings:
    """crm_postgres with a seed database (a small bulk load) for the generator's tests."""
    from crm_pg import build_seed

    build_seed(crm_postgres)
    return crm_postgres


_copies = itertools.count()


@pytest.fixture
def fresh_crm(crm_cluster: Settings) -> Iterator[Callable[[], str]]:
    """A factory of fresh copies of the seed database; returns each copy's DSN."""
    from crm_pg import copy_seed, drop_database

    made: list[str] = []

    def make() -> str:
        made.append(f"crm_t{next(_copies)}")
        return copy_seed(crm_cluster, made[-1])

    yield make
    for name in made:
        drop_database(crm_cluster, name)


_recoveries: list[dict] = []


class RecoveryRows:
    """What a fault test appends its recovery row to: the test's report carries it (pytest-xdist
    hands a worker's reports to the main process), and the terminal summary prints the rows."""

    def __init__(self, node: pytest.Item) -> None:
        self.node = node

    def append(self, row: dict) -> None:
        self.node.user_properties.append(("recovery", row))


@pytest.fixture
def recovery_report(request) -> RecoveryRows:
    """Fault tests append {fault, restart_s, recovery_s, duplicates[, note]}."""
    return RecoveryRows(request.node)


# On pytest-xdist workers (`-n 2 --dist loadfile --no-loadscope-reorder`: whole modules each, in the
# order collected) the longest modules go first, so that the shorter ones fill in behind them. Not
# the default: in that order on two stacks, 9 tests failed in a fresh clone (modules that rely on
# what earlier modules left on the shared stack); run alone, the suite keeps its file order.
LONGEST_FIRST = ("test_orchestration", "test_faults", "test_superset", "test_end_to_end", "test_sensor_stack",
                 "test_open_window", "test_source_model_change", "test_crm_live_pipeline")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not _main_process():
        rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


# Each failure as it happens, whole (the terminal shows them only at the end of a run of 20 minutes
# and more); written by the main process. CI keeps test-artifacts/.
FAILURES = Path(os.environ.get("HRDV_TEST_FAILURES", Path(__file__).parents[1] / "test-artifacts" / "failures.txt"))


def _main_process() -> bool:
    return "PYTEST_XDIST_WORKER" not in os.environ


def pytest_sessionstart(session) -> None:
    if _main_process():
        FAILURES.parent.mkdir(parents=True, exist_ok=True)
        FAILURES.write_text("")


def pytest_runtest_logreport(report) -> None:
    if report.when == "call":
        _recoveries.extend(row for name, row in report.user_properties if name == "recovery")
    if report.failed and _main_process():
        with FAILURES.open("a") as out:
            out.write(f"{'=' * 30} {report.nodeid} ({report.when}) {datetime.now():%H:%M:%S}\n"
                      f"{report.longreprtext}\n{report.capstdout[-5000:]}{report.capstderr[-5000:]}\n")


def pytest_terminal_summary(terminalreporter) -> None:
    if not _recoveries:
        return
    terminalreporter.section("recovery after faults")
    terminalreporter.write_line(f"{'fault':22} {'restart cmd s':>13} {'recovery s':>10} {'duplicates':>10}  note")

    def cell(value: object, width: int) -> str:
        return f"{'-' if value is None else value:>{width}}"

    for row in _recoveries:
        terminalreporter.write_line(f"{row['fault']:22} {cell(row['restart_s'], 13)} "
                                    f"{cell(row['recovery_s'], 10)} {cell(row['duplicates'], 10)}  "
                                    f"{row.get('note', '')}")

"""A fresh stack of its own for a benchmark: $HRDV_HOME (default /tmp/hrdv-bench), ports from 59400."""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone

os.environ.setdefault("HRDV_HOME", "/tmp/hrdv-bench")
os.environ.setdefault("HRDV_PORT_BASE", "59400")
os.environ.setdefault("HRDV_PARTITIONS_START", datetime.now(timezone.utc).strftime("%Y-%m-%d-00:00"))

from hrdv.cli import SERVICES, _spawn_python, start_dagster, start_infrastructure  # noqa: E402
from hrdv.settings import Settings, load  # noqa: E402
from hrdv.stack import kafka, postgres, process  # noqa: E402


def stop_everything(settings: Settings) -> None:
    for name in reversed(SERVICES):
        process.stop(name, settings)
    kafka.stop_connect(settings)
    kafka.stop_broker(settings)
    postgres.stop(settings)


def fresh_stack(customers: int, dagster: bool) -> Settings:
    """Wipe $HRDV_HOME, start PostgreSQL, Kafka, Connect, the ingestor (and Dagster)."""
    stop_everything(load())
    shutil.rmtree(load().home, ignore_errors=True)
    settings = load()
    os.environ.update(settings.child_env())
    start_infrastructure(settings, customers=customers)
    _spawn_python(settings, "ingestor", ["hrdv.ingest"])
    if dagster:
        start_dagster(settings)
    return settings

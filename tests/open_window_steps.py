"""Steps the open window's tests share: a real sensor's tick, the ingestor's copy, the freshness verdict."""
from __future__ import annotations

import time
from datetime import datetime

import psycopg
from dagster import AssetCheckEvaluation, DagsterInstance, build_sensor_context
from recompute import resources

from hrdv_assets.open_window import PROVISIONAL_CHECK
from sensors.open_window import pipeline_freshness_sensor, provisional_kpi_sensor

# The shared stack's CRM has customers but no staff: one engineer per service area lets the live
# generator open work orders.
ENGINEERS_SQL = """
INSERT INTO employees (full_name, role, region_code, service_area_code, specialisation, shift, hired_at)
SELECT 'Инженер ' || sa.code, 'engineer', b.region_code, sa.code, 'internet', 'day', now()
FROM service_areas AS sa JOIN branches AS b ON b.code = sa.branch_code
WHERE NOT EXISTS (SELECT 1 FROM employees WHERE role = 'engineer')
"""


def freshness_verdict(instance: DagsterInstance) -> AssetCheckEvaluation:
    """A provisional refresh, then the provisional marts' freshness check, as the sensors do them."""
    sensor_tick(provisional_kpi_sensor, instance)
    result = sensor_tick(pipeline_freshness_sensor, instance)
    return next(e for e in result.asset_events
                if isinstance(e, AssetCheckEvaluation) and e.check_name == PROVISIONAL_CHECK)


def sensor_tick(sensor_def, instance: DagsterInstance):
    """One tick of a real sensor, with the code location's resources."""
    with build_sensor_context(instance=instance, resources=resources()) as context:
        return sensor_def(context)


def buffer_copied_after(settings, moment: datetime, timeout: float = 60) -> None:
    """Wait until the ingestor's copy holds a heartbeat committed after `moment`."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(settings.hrdv_dsn) as conn:
            newest = conn.execute("SELECT newest_commit FROM provisional.loads WHERE entity = 'debezium_heartbeat'"
                                  ).fetchone()
        if newest and newest[0] and newest[0] > moment:
            return
        assert time.monotonic() < deadline, f"the ingestor copied nothing committed after {moment} in {timeout} s"
        time.sleep(1)

"""The open window's sensors: they launch no runs, they do their small work in the tick.

- provisional_kpi_sensor refreshes the provisional marts (hrdv.provisional.refresh: a second or less
  in PostgreSQL, no ClickHouse) and reports each refresh as a materialisation of
  mart/kpi_provisional. A run per refresh would cost a process start (seconds of CPU on two cores)
  every ten seconds and compete with the final runs for their slots. Stopping the sensor in the
  UI stops the refreshes; the daemon stops it with the stack.
- pipeline_freshness_sensor observes every stage's age on ops/pipeline_health and evaluates the two
  freshness checks.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone

from dagster import (
    AssetMaterialization,
    AssetObservation,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from hrdv import provisional
from hrdv_assets.kpi import CATALOG
from hrdv_assets.open_window import (
    HEALTH_KEY,
    PROVISIONAL_KEY,
    final_verdict,
    health_metadata,
    measure,
    provisional_verdict,
)
from partitions import WINDOW, key_of, reporting_windows
from resources.kafka import KafkaResource
from resources.postgres import PostgresResource


def refresh_interval_s() -> int:
    """Seconds between provisional refreshes (HRDV_PROVISIONAL_REFRESH_S, default 10): with the
    ingestor's 5-second copy, the open window's marts stay under 30 s behind the CRM."""
    raw = os.environ.get("HRDV_PROVISIONAL_REFRESH_S", "10")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"HRDV_PROVISIONAL_REFRESH_S must be a whole number of seconds >= 1, got {raw!r}")
    return int(raw)


def refresh_event(hrdv_db: PostgresResource) -> AssetMaterialization | SkipReason:
    """One refresh, as the materialisation that reports it (or why there was none)."""
    with hrdv_db.connect() as conn:
        done = provisional.refresh(conn, CATALOG, WINDOW, first=reporting_windows.start)
    if done is None:
        return SkipReason("a final publication holds the lock; it replaces these windows")
    if not done.windows:
        return SkipReason("no window to refresh before the first partition")
    now = datetime.now(timezone.utc)
    staleness = done.staleness_s(now)
    keys = [key_of(start) for start in done.windows]
    metadata = {"open_window": keys[-1], "windows": ", ".join(keys), "rows": sum(done.rows.values()),
                "refresh_seconds": done.seconds,
                "reflects": done.reflects.isoformat() if done.reflects else "-"}
    if staleness is not None:
        metadata["staleness_seconds"] = round(staleness, 1)
    return AssetMaterialization(
        asset_key=PROVISIONAL_KEY, metadata=metadata,
        description=f"provisional marts of {', '.join(keys)} refreshed in {done.seconds:.2f} s"
                    + (f", {staleness:.0f} s behind the CRM" if staleness is not None else ""))


@sensor(
    name="provisional_kpi_sensor",
    minimum_interval_seconds=refresh_interval_s(),
    # One switch for the open window: HRDV_PROVISIONAL_LOAD_S=0 stops the ingestor's copy, and then
    # this sensor starts stopped (the UI's toggle still starts it, over staging alone).
    default_status=DefaultSensorStatus.RUNNING if provisional.load_interval_s() else DefaultSensorStatus.STOPPED,
    description=("Refreshes the provisional KPI marts of the window still open (mart/kpi_provisional) "
                 "every tick, without a run; stop it to stop the refreshes."),
)
def provisional_kpi_sensor(context: SensorEvaluationContext, hrdv_db: PostgresResource):
    event = refresh_event(hrdv_db)
    if isinstance(event, SkipReason):
        return event
    context.log.info(event.description)
    return SensorResult(asset_events=[event])


@sensor(
    name="pipeline_freshness_sensor",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=("Every 30 s: each stage's age observed on ops/pipeline_health, and the freshness checks "
                 "of the final and provisional marts evaluated."),
)
def pipeline_freshness_sensor(context: SensorEvaluationContext, hrdv_db: PostgresResource,
                              source_db: PostgresResource, kafka: KafkaResource):
    now = datetime.now(timezone.utc)
    found = measure(hrdv_db, source_db, kafka, now)
    with hrdv_db.connect() as conn:
        provisional.record(conn, found, now)
    verdicts = [final_verdict(hrdv_db, found, now), provisional_verdict(found)]
    for verdict in verdicts:
        if not verdict.passed:
            context.log.warning(f"{verdict.asset_key.to_user_string()}:{verdict.check_name}: {verdict.description}")
    return SensorResult(asset_events=[AssetObservation(asset_key=HEALTH_KEY, metadata=health_metadata(found)),
                                      *verdicts])

"""Late-change sensor: windows that later changes altered get their mart recomputed.

Staging of window W upserts the changes committed in W. Some of them alter earlier windows: the
delete of an older interaction, a reopening, a backdated correction, a commit that lands just
after the window of its business time. Staging lists those windows in its materialisation
metadata (`late_windows`, computed before the upsert from the old and new rows). This sensor reads
every new staging materialisation once (cursor: the event's storage id) and requests one mart-only
run over the range from the earliest to the latest listed window: one run, however many windows
(the mart's backfill policy is single-run, and recomputing an unaffected window in between is
harmless). So the marts converge to the CRM without anyone starting a backfill.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from partitions import reporting_windows

RECORDS_PER_TICK = 500


def late_partition_keys(listed: Iterable[Iterable[str]]) -> list[str]:
    """Sorted partition keys of the listed window starts (ISO) that are partitions."""
    keys = {
        reporting_windows.get_partition_key_for_timestamp(datetime.fromisoformat(start).timestamp())
        for starts in listed
        for start in starts
        if datetime.fromisoformat(start) >= reporting_windows.start
    }
    existing = set(reporting_windows.get_partition_keys())
    return sorted(keys & existing)


def range_request(keys: list[str], cursor: str) -> RunRequest:
    return RunRequest(
        run_key=f"late:{keys[0]}:{keys[-1]}:{cursor}",
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1],
              "hrdv/late_windows": str(len(keys))},
    )


def build_late_change_sensor(job: JobDefinition, staging_key: AssetKey, name: str):
    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=10,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Recomputes the mart of earlier windows that changes staged later altered (deletes, "
            "reopenings, corrections, late commits), from staging's late_windows metadata."
        ),
    )
    def late_change_sensor(context: SensorEvaluationContext):
        after = int(context.cursor) if context.cursor else None
        result = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=staging_key, after_storage_id=after),
            limit=RECORDS_PER_TICK,
            ascending=True,
        )
        if not result.records:
            return SensorResult(
                skip_reason=SkipReason(f"no new materialisation of {staging_key.to_user_string()}"),
                cursor=context.cursor,
            )
        cursor = str(result.records[-1].storage_id)
        listed = [
            record.asset_materialization.metadata["late_windows"].value
            for record in result.records
            if "late_windows" in record.asset_materialization.metadata
        ]
        keys = late_partition_keys(listed)
        if not keys:
            return SensorResult(
                skip_reason=SkipReason(f"{len(result.records)} staging run(s) altered no earlier window"),
                cursor=cursor,
            )
        context.log.info(f"{len(keys)} window(s) altered late: recomputing {keys[0]} .. {keys[-1]}")
        return SensorResult(run_requests=[range_request(keys, cursor)], cursor=cursor)

    return late_change_sensor

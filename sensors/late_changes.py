"""Late-change sensor: windows that later changes altered get their mart recomputed, exactly.

Staging of window W upserts the changes committed in W. Some of them alter earlier windows: the
delete of an older interaction, a reopening, a backdated correction, a commit that lands just
after the window of its business time. Staging lists those windows in its materialisation
metadata (`late_windows`, computed before the upsert from the old and new rows, and only for the
figures a change really moves). This sensor reads every new staging materialisation once (cursor:
the event's storage id) and requests one run of the recompute job for exactly the listed windows,
however far apart they are: the cost grows with the number of late windows, not their spread.
So the marts converge to the CRM without anyone starting a backfill.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

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

from partitions import WINDOW, key_of, reporting_windows

RECORDS_PER_TICK = 500


def late_partition_keys(listed: Iterable[Iterable[str]], now: datetime | None = None) -> list[str]:
    """Sorted keys of the listed window starts (ISO) that are partitions (closed by `now`)."""
    now = now or datetime.now(timezone.utc)
    starts = {datetime.fromisoformat(start) for listed_starts in listed for start in listed_starts}
    return sorted({key_of(start) for start in starts
                   if reporting_windows.start <= start and start + WINDOW <= now})


def recompute_request(keys: list[str], op_name: str, cursor: str) -> RunRequest:
    """One run that recomputes exactly `keys`."""
    return RunRequest(
        run_key=f"late:{cursor}",
        run_config={"ops": {op_name: {"config": {"windows": keys}}}},
        tags={"hrdv/late_windows": str(len(keys)), "hrdv/first_window": keys[0],
              "hrdv/last_window": keys[-1]},
    )


def new_records(instance, staging_keys: Sequence[AssetKey], after: int | None) -> tuple[list, str | None]:
    """Materialisations of any of `staging_keys` after storage id `after`, oldest first, and the
    cursor past them. Storage ids are global to the event log, so one id is the cursor of every
    key; when a key had more than a tick's worth, the cursor stops at its last one read."""
    records, truncated = [], []
    for key in staging_keys:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=RECORDS_PER_TICK, ascending=True)
        records += result.records
        if result.has_more and result.records:
            truncated.append(result.records[-1].storage_id)
    if not records:
        return [], None
    cursor = min(truncated) if truncated else max(r.storage_id for r in records)
    records = sorted((r for r in records if r.storage_id <= cursor), key=lambda r: r.storage_id)
    return records, str(cursor)


def build_late_change_sensor(job: JobDefinition, op_name: str, staging_keys: Sequence[AssetKey], name: str,
                             metadata_key: str = "late_windows"):
    """A sensor recomputing, through `job`'s op `op_name`, exactly the windows staging listed under
    `metadata_key` in its materialisations of `staging_keys`."""
    watched = ", ".join(key.to_user_string() for key in staging_keys)

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=10,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Recomputes the marts of exactly the earlier windows that changes staged later altered "
            f"(deletes, reopenings, corrections, late commits), from staging's {metadata_key} metadata "
            f"of {watched}."
        ),
    )
    def late_change_sensor(context: SensorEvaluationContext):
        after = int(context.cursor) if context.cursor else None
        records, cursor = new_records(context.instance, staging_keys, after)
        if not records:
            return SensorResult(
                skip_reason=SkipReason(f"no new materialisation of {watched}"), cursor=context.cursor)
        listed = [
            record.asset_materialization.metadata[metadata_key].value
            for record in records
            if metadata_key in record.asset_materialization.metadata
        ]
        keys = late_partition_keys(listed)
        if not keys:
            return SensorResult(
                skip_reason=SkipReason(f"{len(records)} staging materialisation(s) altered no earlier window"),
                cursor=cursor,
            )
        context.log.info(f"{len(keys)} window(s) altered late, recomputing exactly those: {keys[:10]}")
        return SensorResult(run_requests=[recompute_request(keys, op_name, cursor)], cursor=cursor)

    return late_change_sensor

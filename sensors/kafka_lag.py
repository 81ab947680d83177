"""Kafka-lag sensor: every closed reporting window published, as soon as it is complete in
ClickHouse, whatever happened to earlier runs.

When is a window [start, end) complete in the buffer? When every CRM change committed before
`end` has been inserted into ClickHouse. The sensor proves that in two steps, with no clock but
PostgreSQL's:

1. Debezium runs a heartbeat action query every second, an upsert into crm.debezium_heartbeat.
   That is a CRM transaction like any other: pgoutput streams transactions in commit order, and
   the connector produces their change events in that order. So once the heartbeat change with
   commit time H is in Kafka, every change committed before H has been handed to Kafka too.
   The sensor reads H from the last message of the heartbeat topic, and only then the end offsets
   of the data topics: together they form a *barrier* (H, end offsets).
2. On a later tick, once the ClickHouse consumer group has committed offsets at or past the
   barrier's end offsets on every partition (the ingestor commits only after its insert
   succeeded), everything committed before H is in the buffer: H becomes the *frontier*.

Every window with end <= frontier - grace is then complete (the staging asset checks the same
barrier itself, so no other route can publish an incomplete window either). The heartbeat keeps
the frontier moving when the CRM is idle, so quiet windows close too. A barrier is kept until it
is met, so a busy stream cannot starve the sensor.

What to request is reconciled on every tick, not remembered: the complete windows since the first
partition that are not published (staging and mart materialised), not covered by a run in
progress, and not waiting for Dagster's automatic retry of a failed run. They are requested as
few runs as possible, one per range of adjacent windows (the assets' single-run backfill policy),
so a sensor that is behind catches up in one run, and a window whose run died is requested again.
Each window is requested at most MAX_ATTEMPTS times; after that it is reported in the skip reason
and the sensor's log until someone publishes it (re-execute its run, or materialise it in the UI).

Every OBSERVE_EVERY the topic and the buffer are observed (end offsets, the newest heartbeat,
the consumer group's committed offsets and lag, how far the buffer is complete), so the lineage
shows live numbers upstream of staging.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from dagster import (
    AssetKey,
    AssetObservation,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    MetadataValue,
    PartitionKeyRange,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    WILL_RETRY_TAG,
)

from partitions import WINDOW, WindowRefused, closed_window, contiguous_ranges, reporting_windows, window_of
from resources.kafka import GRACE, KafkaResource, PartitionLag, offsets_behind

__all__ = ["GRACE", "WindowCursor", "ObservedTopic", "Plan", "advance", "plan_windows", "build_window_sensor"]

# Within a tick, how often and how long to wait for the consumer group to pass a fresh barrier:
# the ingestor commits every few hundred ms, so this saves a whole tick (5-10 s) per window.
CONFIRM_POLLS, CONFIRM_PAUSE_S = 4, 0.5
# Debezium beats every second; a heartbeat this old means capture has stopped (Connect, the
# connector or PostgreSQL is down) and the replication slot is retaining WAL meanwhile.
STALE_HEARTBEAT = timedelta(seconds=30)
MAX_ATTEMPTS = 3  # requests of one window by this sensor (each with Dagster's run retries)
MAX_WINDOWS_PER_RUN = 7 * 24 * 4  # a week of 15-minute windows
MAX_RUNS_PER_TICK = 20
# A failed run tagged dagster/will_retry gets its retry from the daemon within seconds; its
# windows are left to that retry for this long.
RETRY_PENDING = timedelta(minutes=2)
OBSERVE_EVERY = timedelta(seconds=60)


@dataclass
class WindowCursor:
    frontier: str | None = None  # ISO commit time up to which the buffer is complete
    barrier_heartbeat: str | None = None
    barrier_offsets: dict[str, int] = field(default_factory=dict)  # "topic[partition]" -> offset
    attempts: dict[str, int] = field(default_factory=dict)  # unpublished window -> requests
    observed_at: str | None = None  # ISO time of the last observation of topic and buffer

    @classmethod
    def parse(cls, raw: str | None) -> "WindowCursor":
        if not raw:
            return cls()
        known = cls.__dataclass_fields__
        # A cursor of an older version (requested_until) is read for what it still means.
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Plan:
    ranges: list[list[str]]  # runs to request, each a range of adjacent windows
    cursor: WindowCursor
    reason: str  # why nothing (more) is requested
    exhausted: list[str] = field(default_factory=list)  # windows past MAX_ATTEMPTS

    @property
    def windows(self) -> list[str]:
        return [key for keys in self.ranges for key in keys]


def _dt(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def advance(cursor: WindowCursor, lags: list[PartitionLag], heartbeat: datetime | None,
            end_offsets: dict[str, int]) -> tuple[WindowCursor, dict[str, int]]:
    """The barrier step of one tick (pure): a met barrier becomes the frontier, and a newer
    heartbeat sets the next barrier. `lags` are read first, then `heartbeat`, then `end_offsets`.
    Returns the new cursor and what the consumer group still lacks of the current barrier."""
    cursor = WindowCursor(**json.loads(cursor.dump()))
    behind = offsets_behind(cursor.barrier_offsets, lags)
    if cursor.barrier_heartbeat and not behind:
        cursor.frontier = cursor.barrier_heartbeat
        cursor.barrier_heartbeat, cursor.barrier_offsets = None, {}
    if heartbeat is not None and cursor.barrier_heartbeat is None:
        if cursor.frontier is None or heartbeat > _dt(cursor.frontier):
            cursor.barrier_heartbeat = heartbeat.isoformat()
            cursor.barrier_offsets = dict(end_offsets)
    return cursor, behind


def plan_windows(
    cursor: WindowCursor,
    lags: list[PartitionLag],
    heartbeat: datetime | None,
    end_offsets: dict[str, int],
    published: set[str] = frozenset(),
    in_flight: set[str] = frozenset(),
) -> Plan:
    """Pure decision of one tick: the barrier step, then the complete windows that are neither
    published nor in flight, as ranges of adjacent windows."""
    cursor, behind = advance(cursor, lags, heartbeat, end_offsets)
    if heartbeat is None and cursor.frontier is None:
        return Plan([], cursor, "no heartbeat-table change in Kafka yet: is the connector running?")
    if cursor.frontier is None:
        return Plan([], cursor, f"waiting for ClickHouse ingestion to reach the first barrier ({_lag_text(behind, lags)})")
    complete_until = _dt(cursor.frontier) - GRACE
    complete = reporting_windows.get_partition_keys(current_time=complete_until)
    cursor.attempts = {k: n for k, n in cursor.attempts.items() if k not in published}
    missing = [k for k in complete if k not in published and k not in in_flight]
    exhausted = [k for k in missing if cursor.attempts.get(k, 0) >= MAX_ATTEMPTS]
    wanted = [k for k in missing if cursor.attempts.get(k, 0) < MAX_ATTEMPTS]
    ranges = list(contiguous_ranges(wanted, MAX_WINDOWS_PER_RUN))[:MAX_RUNS_PER_TICK]
    for key in (k for keys in ranges for k in keys):
        cursor.attempts[key] = cursor.attempts.get(key, 0) + 1
    newest = complete[-1] if complete else None
    reason = (f"{_state(newest, in_flight)}; complete in ClickHouse up to {complete_until:%H:%M:%S} "
              f"UTC; {_lag_text(behind, lags)}")
    if exhausted:
        reason += (f"; {len(exhausted)} window(s) failed {MAX_ATTEMPTS} times and are no longer "
                   f"requested: {exhausted[:5]}... (see their failed runs; re-execute one to publish)")
    return Plan(ranges, cursor, reason, exhausted)


def _state(newest: str | None, in_flight: set[str]) -> str:
    if newest is None:
        return "no window has closed since the first partition"
    text = f"every closed window up to {newest} is published or requested"
    return text + (f" ({len(in_flight)} in runs not yet finished)" if in_flight else "") + \
        f"; the next closes at {window_of(newest).end + WINDOW:%H:%M} Moscow"


def stale_heartbeat_note(heartbeat: datetime | None, now: datetime) -> str:
    """'' while capture is live, else what an operator should look at."""
    if heartbeat is None or now - heartbeat < STALE_HEARTBEAT:
        return ""
    return (f"; the newest Debezium heartbeat in Kafka is {(now - heartbeat).total_seconds():.0f} s "
            "old: capture has stopped (Kafka Connect, the connector or PostgreSQL), and the "
            "replication slot retains WAL until it resumes; see `./hrdv.sh status`")


def _lag_text(behind: dict[str, int], lags: list[PartitionLag]) -> str:
    if behind:
        return "behind the barrier: " + ", ".join(f"{k} {v}" for k, v in sorted(behind.items()))
    return "lag " + (", ".join(f"{lag.name} {lag.lag}" for lag in lags) or "unknown (no topics yet)")


# --- what the instance knows ----------------------------------------------------------------------
def run_windows(tags: dict[str, str]) -> list[str]:
    """The windows a run targets, from its partition tags ([] for none, or for keys the assets
    refuse: off-grid, open or future windows cover nothing)."""
    first = tags.get(ASSET_PARTITION_RANGE_START_TAG) or tags.get(PARTITION_NAME_TAG)
    last = tags.get(ASSET_PARTITION_RANGE_END_TAG) or tags.get(PARTITION_NAME_TAG)
    if not first or not last:
        return []
    try:
        closed_window(first), closed_window(last)
    except WindowRefused:
        return []
    return reporting_windows.get_partition_keys_in_range(PartitionKeyRange(first, last))


def windows_in_flight(instance: DagsterInstance, now: datetime) -> set[str]:
    """Windows of runs not finished yet (queued ones included), or failed with Dagster's
    automatic retry still to come."""
    unfinished = [status for status in DagsterRunStatus if status not in FINISHED_STATUSES]
    records = [*instance.get_run_records(RunsFilter(statuses=unfinished)),
               *instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE],
                                                    tags={WILL_RETRY_TAG: "true"},
                                                    updated_after=now - RETRY_PENDING))]
    return {key for record in records for key in run_windows(record.dagster_run.tags)}


def published_windows(instance: DagsterInstance, keys: Iterable[AssetKey]) -> set[str]:
    """Windows every one of `keys` has materialised."""
    sets = [instance.get_materialized_partitions(key) for key in keys]
    return set.intersection(*map(set, sets)) if sets else set()


@dataclass(frozen=True)
class ObservedTopic:
    """A data topic the barrier covers, and the topic and buffer assets it is observed on."""

    topic: str
    topic_key: AssetKey
    buffer_key: AssetKey


def observations(observed: Iterable[ObservedTopic], lags: list[PartitionLag], heartbeat: datetime | None,
                 frontier: str | None) -> list[AssetObservation]:
    """Each topic's and buffer's figures: end offsets, newest heartbeat, consumer lag, completeness."""
    return [event for each in observed for event in
            _observations(each.topic_key, each.buffer_key,
                          [lag for lag in lags if lag.topic == each.topic], heartbeat, frontier)]


def _observations(topic_key: AssetKey, buffer_key: AssetKey, lags: list[PartitionLag],
                  heartbeat: datetime | None, frontier: str | None) -> list[AssetObservation]:
    ends = {lag.name: lag.end_offset for lag in lags}
    return [
        AssetObservation(asset_key=topic_key, metadata={
            "messages": sum(ends.values()),
            "end_offsets": MetadataValue.json(ends),
            "newest_heartbeat_commit": MetadataValue.text(heartbeat.isoformat() if heartbeat else "-"),
        }),
        AssetObservation(asset_key=buffer_key, metadata={
            "consumer_lag": sum(lag.lag for lag in lags),
            "committed_offsets": MetadataValue.json({lag.name: lag.committed for lag in lags}),
            "complete_until": MetadataValue.text(frontier or "-"),
        }),
    ]


def build_window_sensor(job: JobDefinition, observed: list[ObservedTopic], published_by: list[AssetKey],
                        name: str):
    """The lag sensor of `job`: its barrier covers every topic of `observed` (all data topics)."""
    topics = [each.topic for each in observed]

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=5,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Publishes every closed reporting window once every CRM change committed before its end "
            f"({len(topics)} data topics) is in the ClickHouse buffers (Debezium heartbeat barrier + consumer group offsets); "
            "requests again windows whose runs died, ranges of windows as one run; observes the "
            "topic and the buffer (see sensors/kafka_lag.py)."
        ),
    )
    def window_sensor(context: SensorEvaluationContext, kafka: KafkaResource):
        lags = kafka.lag(topics)
        heartbeat = kafka.latest_heartbeat()
        end_offsets = {f"{t}[{p}]": o for (t, p), o in kafka.end_offsets(topics).items()}
        cursor = WindowCursor.parse(context.cursor)
        now = datetime.now(timezone.utc)
        published = published_windows(context.instance, published_by)
        in_flight = windows_in_flight(context.instance, now)
        plan = plan_windows(cursor, lags, heartbeat, end_offsets, published, in_flight)
        for _ in range(CONFIRM_POLLS):
            if plan.ranges or plan.cursor.barrier_heartbeat is None:
                break
            time.sleep(CONFIRM_PAUSE_S)
            lags = kafka.lag(topics)
            plan = plan_windows(plan.cursor, lags, heartbeat, end_offsets, published, in_flight)
        events = []
        if plan.cursor.observed_at is None or now - _dt(plan.cursor.observed_at) >= OBSERVE_EVERY:
            events = observations(observed, lags, heartbeat, plan.cursor.frontier)
            plan.cursor.observed_at = now.isoformat()
        if plan.exhausted:
            context.log.error(plan.reason)
        if not plan.ranges:
            reason = plan.reason + stale_heartbeat_note(heartbeat, now)
            return SensorResult(skip_reason=SkipReason(reason), cursor=plan.cursor.dump(),
                                asset_events=events)
        return SensorResult(
            run_requests=[window_request(keys, plan.cursor.attempts[keys[0]]) for keys in plan.ranges],
            cursor=plan.cursor.dump(),
            asset_events=events,
        )

    return window_sensor


def window_request(keys: list[str], attempt: int) -> RunRequest:
    """One run for adjacent windows keys[0]..keys[-1]."""
    tags = {"hrdv/windows": str(len(keys)), "hrdv/attempt": str(attempt)}
    run_key = f"{keys[0]}..{keys[-1]}#{attempt}"
    if len(keys) == 1:
        return RunRequest(run_key=run_key, partition_key=keys[0], tags=tags)
    return RunRequest(run_key=run_key, tags={**tags, ASSET_PARTITION_RANGE_START_TAG: keys[0],
                                             ASSET_PARTITION_RANGE_END_TAG: keys[-1]})

"""Kafka-lag sensor: one run per reporting window, as soon as the window is complete in ClickHouse.

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

Every window with end <= frontier - grace is then complete. The grace (1 s by default) absorbs
the small disorder between commit timestamps and commit order of concurrent transactions. The
heartbeat keeps the frontier moving when the CRM is idle, so quiet windows close too. A barrier
is kept until it is met, so a busy stream cannot starve the sensor. The cursor remembers the last
window requested: each window is requested once (its run key is the window too). On the first
tick the sensor starts with the window of the oldest change still in the topics (a snapshot
taken before Dagster started included), but not before the first partition.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from partitions import WINDOW, WINDOW_ORIGIN, closed_windows_between, reporting_windows, window_of
from resources.kafka import KafkaResource, PartitionLag

GRACE = timedelta(seconds=1)
# Within a tick, how often and how long to wait for the consumer group to pass a fresh barrier:
# the ingestor commits every few hundred ms, so this saves a whole tick (5-10 s) per window.
CONFIRM_POLLS, CONFIRM_PAUSE_S = 4, 0.5
# Debezium beats every second; a heartbeat this old means capture has stopped (Connect, the
# connector or PostgreSQL is down) and the replication slot is retaining WAL meanwhile.
STALE_HEARTBEAT = timedelta(seconds=30)
MAX_REQUESTS_PER_TICK = 96  # a day of 15-minute windows; the rest follows on the next ticks


@dataclass
class WindowCursor:
    requested_until: str | None = None  # ISO end of the last window requested
    frontier: str | None = None  # ISO commit time up to which the buffer is complete
    barrier_heartbeat: str | None = None
    barrier_offsets: dict[str, int] = field(default_factory=dict)  # "topic[partition]" -> offset

    @classmethod
    def parse(cls, raw: str | None) -> "WindowCursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Plan:
    windows: list[str]
    cursor: WindowCursor
    reason: str  # why nothing (more) is requested


def _dt(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _floor_to_window(moment: datetime) -> datetime:
    return WINDOW_ORIGIN + ((moment - WINDOW_ORIGIN) // WINDOW) * WINDOW


def plan_windows(
    cursor: WindowCursor,
    lags: list[PartitionLag],
    heartbeat: datetime | None,
    end_offsets: dict[str, int],
    earliest: datetime | None = None,
) -> Plan:
    """Pure decision of one tick. `lags` are read first, then `heartbeat`, then `end_offsets`;
    `earliest` (the oldest change in the topics) only matters on the first tick."""
    cursor = WindowCursor(**asdict(cursor))
    committed = {lag.name: lag.committed for lag in lags}
    behind = {
        name: offset - committed.get(name, -1)
        for name, offset in cursor.barrier_offsets.items()
        if committed.get(name, -1) < offset
    }
    if cursor.barrier_heartbeat and not behind:
        cursor.frontier = cursor.barrier_heartbeat
        cursor.barrier_heartbeat, cursor.barrier_offsets = None, {}
    if heartbeat is not None and cursor.barrier_heartbeat is None:
        if cursor.frontier is None or heartbeat > _dt(cursor.frontier):
            cursor.barrier_heartbeat = heartbeat.isoformat()
            cursor.barrier_offsets = dict(end_offsets)
    if heartbeat is None and cursor.frontier is None:
        return Plan([], cursor, "no heartbeat-table change in Kafka yet: is the connector running?")
    if cursor.requested_until is None:
        first = min(filter(None, [earliest, _dt(cursor.frontier), heartbeat]))
        first = max(first, reporting_windows.start)
        cursor.requested_until = _floor_to_window(first).isoformat()
    if cursor.frontier is None:
        return Plan([], cursor, f"waiting for ClickHouse ingestion to reach the first barrier ({_lag_text(behind, lags)})")
    complete_until = _dt(cursor.frontier) - GRACE
    windows = closed_windows_between(_dt(cursor.requested_until), complete_until)[:MAX_REQUESTS_PER_TICK]
    if windows:
        cursor.requested_until = window_of(windows[-1]).end.astimezone(timezone.utc).isoformat()
        return Plan(windows, cursor, "")
    next_end = _dt(cursor.requested_until) + WINDOW
    return Plan(
        [],
        cursor,
        f"next window ends {next_end:%H:%M:%S} UTC; complete in ClickHouse up to "
        f"{complete_until:%H:%M:%S} UTC; {_lag_text(behind, lags)}",
    )


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


def build_window_sensor(job: JobDefinition, data_topics: list[str], name: str) -> object:
    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=5,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Requests one run per closed reporting window once every CRM change committed before "
            "the window's end is in the ClickHouse buffer (Debezium heartbeat barrier + consumer "
            "group offsets; see sensors/kafka_lag.py)."
        ),
    )
    def window_sensor(context: SensorEvaluationContext, kafka: KafkaResource):
        lags = kafka.lag(data_topics)
        heartbeat = kafka.latest_heartbeat()
        end_offsets = {f"{t}[{p}]": o for (t, p), o in kafka.end_offsets(data_topics).items()}
        cursor = WindowCursor.parse(context.cursor)
        earliest = kafka.earliest_commit(data_topics) if cursor.requested_until is None else None
        plan = plan_windows(cursor, lags, heartbeat, end_offsets, earliest)
        for _ in range(CONFIRM_POLLS):
            if plan.windows or plan.cursor.barrier_heartbeat is None:
                break
            time.sleep(CONFIRM_PAUSE_S)
            plan = plan_windows(plan.cursor, kafka.lag(data_topics), heartbeat, end_offsets)
        if not plan.windows:
            reason = plan.reason + stale_heartbeat_note(heartbeat, datetime.now(timezone.utc))
            return SensorResult(skip_reason=SkipReason(reason), cursor=plan.cursor.dump())
        return SensorResult(
            run_requests=[RunRequest(run_key=key, partition_key=key) for key in plan.windows],
            cursor=plan.cursor.dump(),
        )

    return window_sensor

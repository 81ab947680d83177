"""Fault injection on the local stack, for the fault tests and the recovery bench.

`sigkill` crashes one component (its whole process tree, no chance to clean up), `restart` brings
it back with the stack's own start functions, and `recover` times how long until a CRM change
committed after the restart is in the ClickHouse buffer. A change is in the buffer once the
ingestion group has committed past its Kafka offset: the ingestor commits only after the insert
(and its materialized view) succeeded. Watching offsets instead of querying chDB keeps the probe
from taking the chDB path away from the ingestor (every hand-over reopens the path, ~1.5 MiB).

`Writer` keeps the simple generator writing in a thread, stoppable and restartable; it survives
PostgreSQL going away (hrdv.generator reconnects).
"""
from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psutil
import psycopg
from confluent_kafka import Consumer, TopicPartition

from hrdv import generator
from hrdv.crm import live
from hrdv.crm.behaviour import Behaviour, scaled
from hrdv.settings import Settings
from hrdv.stack import process
from resources.kafka import KafkaResource

COMPONENTS = ("kafka", "connect", "ingestor", "postgres")
T = TypeVar("T")


class FaultTimeout(AssertionError):
    """A bounded wait ran out: the stack did not recover in time."""


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; raise FaultTimeout after `timeout` s.

    Exceptions of the probe count as "not yet" (a component that restarts refuses connections).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last_error = error
        time.sleep(every)
    raise FaultTimeout(f"{what}: not within {timeout:.0f} s (last error: {last_error})")


# --- kill and restart ------------------------------------------------------------------------------
def main_pid(settings: Settings, component: str) -> int | None:
    """The component's main process: PostgreSQL's postmaster, or the pid file of the others."""
    if component != "postgres":
        return process.pid_of(component, settings)
    try:
        pid = int((settings.pg_data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None


def is_up(settings: Settings, component: str) -> bool:
    return main_pid(settings, component) is not None


def kill_tree(pid: int, timeout: float = 15) -> int:
    """SIGKILL a process and everything it started; returns how many processes died."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)  # also reaps the ones that are our children
    if alive:
        raise RuntimeError(f"{len(alive)} process(es) survived SIGKILL: {alive}")
    return len(procs)


def sigkill(settings: Settings, component: str) -> int:
    """SIGKILL the component and every process it started (a crash); returns how many died.

    For PostgreSQL the backends must die too: a new postmaster refuses to start while an old
    backend still holds the shared memory.
    """
    pid = main_pid(settings, component)
    if pid is None:
        raise RuntimeError(f"{component} is not running")
    return kill_tree(pid)


def restart(settings: Settings, component: str) -> None:
    """Start a component again with the stack's own start functions (each returns when ready)."""
    from hrdv.cli import _spawn_python
    from hrdv.stack import kafka, postgres

    starters: dict[str, Callable[[], None]] = {
        "kafka": lambda: kafka.start_broker(settings),
        "connect": lambda: kafka.start_connect(settings),
        "ingestor": lambda: _spawn_python(settings, "ingestor", ["hrdv.ingest"]),
        "postgres": lambda: postgres.start(settings),
    }
    starters[component]()


def stall_when(settings: Settings, component: str, seconds: float, ready: Callable[[], bool],
               timeout: float = 300.0) -> threading.Thread:
    """In the background: once `ready()` is true, stop the component's main process (SIGSTOP)
    for `seconds`, then continue it (SIGCONT). A frozen process misses its heartbeats, as one
    starved of CPU on a busy machine does."""

    def stall() -> None:
        wait_for(ready, timeout, f"the moment to stall {component}", every=0.05)
        proc = psutil.Process(main_pid(settings, component))
        proc.suspend()
        try:
            print(f"faults: {component} stopped (SIGSTOP) for {seconds:g} s", flush=True)
            time.sleep(seconds)
        finally:
            proc.resume()
        print(f"faults: {component} continued (SIGCONT)", flush=True)

    thread = threading.Thread(target=stall, name=f"hrdv-stall-{component}", daemon=True)
    thread.start()
    return thread


# --- markers ---------------------------------------------------------------------------------------
MARKER_SUBJECT = "hrdv-fault-marker"


def write_marker(settings: Settings) -> int:
    """Commit a new interaction in the CRM and return its id.

    Markers take negative ids, which no generator uses (they number from max(id) + 1). They are
    ordinary interactions for the marts (the recomputation counts them too).
    """
    with psycopg.connect(settings.crm_dsn, connect_timeout=5) as conn:
        return conn.execute(
            """INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code,
                                         queue_code, status, subject, created_at, updated_at)
               SELECT least((SELECT min(id) FROM interactions), 0) - 1, c.id, 'call',
                      c.region_code, 'internet', 'q_call', 'new', %s, clock_timestamp(),
                      clock_timestamp()
               FROM customers c ORDER BY c.id LIMIT 1
               RETURNING id""", (MARKER_SUBJECT,)).fetchone()[0]


def _consumer(settings: Settings, group: str) -> Consumer:
    # Never subscribes, so it never joins (or disturbs) the group it reads offsets of.
    return Consumer(settings.kafka_client("reader", **{
        "group.id": group, "enable.auto.commit": False, "socket.timeout.ms": 5000}))


def end_offsets(settings: Settings) -> dict[int, int]:
    """High watermark per partition of the interactions topic ({} before it exists)."""
    ends = KafkaResource.of_stack(settings).end_offsets([settings.topic("interactions")])
    return {partition: offset for (_, partition), offset in ends.items()}


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The ingestion group's committed offset per partition (-1001 when none)."""
    lags = KafkaResource.of_stack(settings).lag([settings.topic("interactions")])
    return {lag.partition: lag.committed for lag in lags}


@dataclass
class TopicScan:
    """What the interactions topic holds from some offsets on."""

    marker_at: tuple[int, int] | None = None   # (partition, offset) of the marker's event
    events: Counter = field(default_factory=Counter)  # (id, op, lsn) -> times seen

    @property
    def duplicates(self) -> int:
        """Events sent more than once (the same change: id, op and source LSN)."""
        return sum(n - 1 for n in self.events.values())


def scan_for_marker(settings: Settings, since: dict[int, int], marker_id: int,
                    timeout: float) -> TopicScan:
    """Read the topic from `since` until the marker's insert event shows up."""
    topic, scan = settings.topic("interactions"), TopicScan()
    consumer = _consumer(settings, f"{settings.consumer_group}-faults")
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in since.items()])
    deadline = time.monotonic() + timeout
    try:
        while scan.marker_at is None:
            if time.monotonic() > deadline:
                raise FaultTimeout(f"marker {marker_id} not in {topic} within {timeout:.0f} s")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None and message.value() is not None:
                    _count(scan, message, marker_id)
    finally:
        consumer.close()
    return scan


def _count(scan: TopicScan, message, marker_id: int) -> None:
    event = json.loads(message.value())
    row = event.get("after") or event.get("before") or {}
    scan.events[(row.get("id"), event.get("op"), event.get("source", {}).get("lsn"))] += 1
    if row.get("id") == marker_id and event.get("op") == "c":
        scan.marker_at = (message.partition(), message.offset())


def marker_through(settings: Settings, since: dict[int, int], timeout: float) -> TopicScan:
    """Commit a marker in the CRM and wait until it is in the ClickHouse buffer (the ingestion
    group committed past its offset): proof that data flows end to end. Returns the scan of the
    topic from `since` up to the marker."""
    began = time.monotonic()
    marker = wait_for(lambda: write_marker(settings), timeout, "a marker committed in the CRM")
    scan = scan_for_marker(settings, since, marker, timeout - (time.monotonic() - began))
    partition, offset = scan.marker_at
    wait_for(lambda: committed_offsets(settings)[partition] > offset,
             timeout - (time.monotonic() - began), f"marker {marker} in the ClickHouse buffer")
    return scan


# --- one fault, timed ------------------------------------------------------------------------------
@dataclass
class Recovery:
    component: str
    killed: int              # processes killed
    restart_s: float         # the restart command, until it returned
    recovery_s: float        # restart command -> marker committed after it is in the buffer
    duplicates: int          # events Kafka holds twice for the fault's stretch of the stream


def recover(settings: Settings, component: str, downtime: float = 3.0,
            lead_in: float = 2.0, timeout: float = 90.0) -> Recovery:
    """Kill `component`, leave it down `downtime` s, restart it and time the recovery.

    The topic is scanned from offsets taken `lead_in` s before the kill: Connect re-sends what
    it produced after its last offset flush (every second), and those duplicates must be counted
    against originals inside the scanned stretch. The component runs again when this returns or
    raises (a failed restart is retried once).
    """
    since = wait_for(lambda: end_offsets(settings), 30, "offsets of the interactions topic")
    time.sleep(lead_in)
    killed = sigkill(settings, component)
    try:
        time.sleep(downtime)
        began = time.monotonic()
        restart(settings, component)
        restart_s = time.monotonic() - began
        scan = marker_through(settings, since, timeout - (time.monotonic() - began))
        return Recovery(component, killed, round(restart_s, 2),
                        round(time.monotonic() - began, 2), scan.duplicates)
    finally:
        if not is_up(settings, component):
            restart(settings, component)


# --- a replayed topic ------------------------------------------------------------------------------
def replay_topic(settings: Settings, batch: int = 5000, table: str = "interactions") -> int:
    """Deliver every message of the topic of CRM table `table` to ClickHouse once more, with its
    Kafka coordinates, as a consumer rewound to the start (or a re-created Kafka-engine table)
    would; returns how many messages went in. Reads up to the end offsets at the call."""
    from hrdv import clickhouse, ingest

    topic = settings.topic(table)
    ends = {p: o for (_, p), o in KafkaResource.of_stack(settings).end_offsets([topic]).items()}
    consumer = _consumer(settings, f"{settings.consumer_group}-replay")
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    replayed, pending = 0, {p: end for p, end in ends.items() if end > 0}
    deadline = time.monotonic() + 60
    try:
        while pending:
            # A short poll: consume() waits its whole timeout for a batch it cannot fill.
            messages = [m for m in consumer.consume(batch, timeout=0.5) if not m.error()]
            if not messages:
                assert time.monotonic() < deadline, f"nothing more to read of {topic} before its end offsets {ends}"
                continue
            messages = [m for m in messages if m.offset() < ends[m.partition()]]
            rows = ingest.queue_rows(messages, ingest.topic_queues(settings))
            with clickhouse.session(settings.clickhouse_dsn) as client:
                ingest.insert_rows(client, rows)
            replayed += sum(map(len, rows.values()))
            for m in messages:
                if m.offset() + 1 >= pending.get(m.partition(), 0):
                    pending.pop(m.partition(), None)
    finally:
        consumer.close()
    return replayed


# --- background CRM writes -------------------------------------------------------------------------
class Writer:
    """A CRM writer in a thread: start, stop (the last change is committed when stop returns).

    By default hrdv.generator (interactions only); `every_entity` runs the live generator
    instead, lifecycles an hour a minute and a fifth of its changes to reference entities, so
    that every topic carries changes while components fail."""

    def __init__(self, settings: Settings, rate: float, every_entity: bool = False) -> None:
        self.settings, self.rate, self.every_entity = settings, rate, every_entity
        self.changes = 0
        self.starts = 0  # how many times it was started: a test can tell whether it wrote since
        self._seed = 100
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._seed += 1  # a new sequence of decisions, from the CRM's current state
        self.starts += 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._seed, self._stop),
                                        name="hrdv-fault-writer", daemon=True)
        self._thread.start()

    def _run(self, seed: int, stop: threading.Event) -> None:
        try:
            if self.every_entity:
                stats = live.run_live(self.settings.crm_dsn, rate=self.rate, seed=seed, stop=stop,
                                      behaviour=scaled(Behaviour(reference_change_share=0.2), 1 / 600),
                                      progress_every=1e9)
            else:
                stats = generator.run(self.settings.crm_dsn, rate=self.rate, seed=seed, stop=stop,
                                      progress_every=1e9)
            self.changes += stats.changes
        except BaseException as error:  # noqa: BLE001 - surfaced by stop()
            self._error = error

    def stop(self, timeout: float = 30) -> None:
        """Stop writing; raise if the writer died on its own."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        alive, self._thread = self._thread.is_alive(), None
        if alive:
            raise FaultTimeout(f"the writer did not stop within {timeout:.0f} s")
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("the CRM writer failed") from error

"""The simple CRM generator: interactions through new -> assigned -> in_progress -> closed.

Some new calls and chats are abandoned instead (new -> abandoned: the customer hung up in the
queue), and some contacts in progress are transferred to another queue of their channel (at most
twice) before they close.

The tests use it because its data is easy to reason about; hrdv/crm/live.py is the realistic
generator (curves, repeats, incidents, work orders, claims).


It writes what a CRM writes: new interactions, assignment, first response, closing (with or
without first-contact resolution) and a few hard deletes, in short transactions at a given rate
of changes per second. Business timestamps come from clock_timestamp() inside each statement, so
they are the CRM's own clock. The same seed gives the same sequence of decisions.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import psycopg

from hrdv.pacing import Pace

# Codes from sql/crm/reference_data.sql (applied when PostgreSQL starts).
CHANNELS = ["call", "chat", "web"]
CHANNEL_WEIGHTS = [0.55, 0.3, 0.15]
TOPICS = ["internet", "tv", "mobile", "billing", "equipment"]
SUBJECTS = ["Нет интернета", "Вопрос по счёту", "Не работает ТВ", "Смена тарифа", "Роутер", None]
# Per advance of a new call or chat: abandoned instead of assigned (hrdv.crm.behaviour's shares).
ABANDON_SHARE = {"call": 0.06, "chat": 0.03}
# Per advance of a contact in progress: transferred instead of closed (at most MAX_TRANSFERS).
TRANSFER_SHARE = 0.08
MAX_TRANSFERS = 2


@dataclass
class GeneratorStats:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    transactions: int = 0

    @property
    def changes(self) -> int:
        return self.inserted + self.updated + self.deleted

    def add_transaction(self, changes: "GeneratorStats") -> None:
        """Count one committed transaction and its changes."""
        self.inserted += changes.inserted
        self.updated += changes.updated
        self.deleted += changes.deleted
        self.transactions += 1


@dataclass
class _State:
    next_id: int
    customers: int
    open_ids: dict[int, str] = field(default_factory=dict)  # id -> status
    # id -> (channel, queue, transfers) of the open ones
    contacts: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    queues: dict[str, list[str]] = field(default_factory=dict)  # channel -> its queues, by code


def seed_customers(conn: psycopg.Connection, customers: int, seed: int = 1) -> None:
    """Customers 1..N in random regions, for a CRM without the bulk load; idempotent."""
    rng = random.Random(seed)
    with conn.transaction(), conn.cursor() as cur:
        regions = [code for (code,) in cur.execute("SELECT code FROM regions ORDER BY code")]
        if not regions:
            raise SystemExit("the CRM has no regions: its reference data is applied at start-up")
        have = cur.execute("SELECT coalesce(max(id), 0) FROM customers").fetchone()[0]
        with cur.copy("COPY customers (id, full_name, region_code, registered_at) FROM STDIN") as copy:
            for cid in range(have + 1, customers + 1):
                copy.write_row((cid, f"Клиент {cid}", rng.choice(regions), "2020-01-01T00:00:00Z"))


def _load_state(conn: psycopg.Connection) -> _State:
    with conn.cursor() as cur:
        next_id = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM interactions").fetchone()[0]
        customers = cur.execute("SELECT count(*) FROM customers").fetchone()[0]
        if customers == 0:
            raise SystemExit("the CRM has no customers: run `hrdv generate --customers N` first")
        rows = cur.execute("SELECT id, status, channel_code, queue_code, transfer_count FROM interactions "
                           "WHERE status NOT IN ('closed', 'abandoned')").fetchall()
        queues: dict[str, list[str]] = {}
        for code, channel in cur.execute("SELECT code, channel_code FROM queues ORDER BY code"):
            queues.setdefault(channel, []).append(code)
    return _State(next_id=next_id, customers=customers, open_ids={row[0]: row[1] for row in rows},
                  contacts={row[0]: (row[2], row[3], row[4]) for row in rows}, queues=queues)


def _insert(cur: psycopg.Cursor, rng: random.Random, state: _State) -> None:
    channel = rng.choices(CHANNELS, CHANNEL_WEIGHTS)[0]
    customer = rng.randint(1, state.customers)
    cur.execute(
        """
        INSERT INTO interactions (id, customer_id, channel_code, region_code, topic_code,
                                  queue_code, status, subject, created_at, updated_at)
        SELECT %s, c.id, %s, c.region_code, %s, %s, 'new', %s, clock_timestamp(), clock_timestamp()
        FROM customers c WHERE c.id = %s
        """,
        (state.next_id, channel, rng.choice(TOPICS), f"q_{channel}", rng.choice(SUBJECTS), customer),
    )
    state.open_ids[state.next_id] = "new"
    state.contacts[state.next_id] = (channel, f"q_{channel}", 0)
    state.next_id += 1


def _advance(cur: psycopg.Cursor, rng: random.Random, state: _State, interaction_id: int) -> None:
    status = state.open_ids[interaction_id]
    channel, queue, transfers = state.contacts.get(interaction_id, ("", "", MAX_TRANSFERS))
    if status == "new" and rng.random() < ABANDON_SHARE.get(channel, 0.0):
        cur.execute(
            """UPDATE interactions SET (status, abandoned_at, updated_at) = (SELECT 'abandoned', moment, moment
                      FROM (SELECT greatest(clock_timestamp(), created_at + interval '1 microsecond')
                            AS moment) AS m)
               WHERE id = %s""",
            (interaction_id,),
        )
        _forget(state, interaction_id)
    elif status == "new":
        cur.execute(
            """UPDATE interactions SET status = 'assigned', operator_id = %s,
                      updated_at = clock_timestamp() WHERE id = %s""",
            (rng.randint(1, 500), interaction_id),
        )
        state.open_ids[interaction_id] = "assigned"
    elif status == "assigned":
        cur.execute(
            """UPDATE interactions SET status = 'in_progress', first_response_at = clock_timestamp(),
                      updated_at = clock_timestamp() WHERE id = %s""",
            (interaction_id,),
        )
        state.open_ids[interaction_id] = "in_progress"
    elif (transfers < MAX_TRANSFERS and rng.random() < TRANSFER_SHARE
          and [q for q in state.queues.get(channel, []) if q != queue]):
        target = rng.choice([q for q in state.queues[channel] if q != queue])
        cur.execute(
            """UPDATE interactions SET queue_code = %s, transfer_count = transfer_count + 1,
                      updated_at = clock_timestamp() WHERE id = %s""",
            (target, interaction_id),
        )
        state.contacts[interaction_id] = (channel, target, transfers + 1)
    else:
        cur.execute(
            """UPDATE interactions SET status = 'closed', closed_at = clock_timestamp(),
                      resolved_on_first_contact = %s, updated_at = clock_timestamp()
               WHERE id = %s""",
            (rng.random() < 0.7, interaction_id),
        )
        _forget(state, interaction_id)


def _forget(state: _State, interaction_id: int) -> None:
    state.open_ids.pop(interaction_id, None)
    state.contacts.pop(interaction_id, None)


def _delete(cur: psycopg.Cursor, state: _State, interaction_id: int) -> None:
    cur.execute("DELETE FROM interactions WHERE id = %s", (interaction_id,))
    _forget(state, interaction_id)


def _one_change(cur: psycopg.Cursor, rng: random.Random, state: _State, stats: GeneratorStats,
                delete_share: float) -> None:
    roll = rng.random()
    if not state.open_ids or roll < 0.35:
        _insert(cur, rng, state)
        stats.inserted += 1
    elif roll < 0.35 + delete_share:
        _delete(cur, state, rng.choice(list(state.open_ids)))
        stats.deleted += 1
    else:
        _advance(cur, rng, state, rng.choice(list(state.open_ids)))
        stats.updated += 1


def run(
    dsn: str,
    rate: float,
    duration: float | None = None,
    max_changes: int | None = None,
    seed: int = 1,
    changes_per_transaction: int = 5,
    delete_share: float = 0.02,
    progress_every: float = 10.0,
    stop: threading.Event | None = None,
    reconnect_timeout: float = 60.0,
) -> GeneratorStats:
    """Write about `rate` changes per second until `duration` seconds or `max_changes` pass, or
    `stop` is set.

    A lost connection (the CRM restarting, crashing) is not fatal: the generator reconnects for up
    to `reconnect_timeout` seconds and reloads its state from the CRM, whose committed rows are
    the truth (the transaction in flight may or may not have committed). Only committed changes
    are counted.
    """
    pace = Pace(rate, duration, max_changes, stop or threading.Event())
    rng = random.Random(seed)
    stats = GeneratorStats()
    while not pace.done(stats.changes):
        try:
            _write(dsn, rng, stats, pace, changes_per_transaction, delete_share, progress_every)
        except psycopg.OperationalError as error:
            print(f"generator: lost the CRM ({str(error).strip()}); reconnecting", flush=True)
            _wait_for_crm(dsn, pace, reconnect_timeout)
    return stats


def _write(dsn: str, rng: random.Random, stats: GeneratorStats, pace: Pace,
           changes_per_transaction: int, delete_share: float, progress_every: float) -> None:
    # Autocommit, so that each conn.transaction() below is one real CRM transaction.
    with psycopg.connect(dsn, application_name="hrdv-generator", autocommit=True) as conn:
        state = _load_state(conn)
        while not pace.done(stats.changes):
            batch = pace.due(stats.changes, changes_per_transaction)
            if batch == 0:
                pace.nap()
                continue
            pending = GeneratorStats()
            with conn.transaction(), conn.cursor() as cur:
                for _ in range(batch):
                    _one_change(cur, rng, state, pending, delete_share)
            stats.add_transaction(pending)
            if pace.report_due(progress_every):
                print(f"generator: {stats.changes} changes ({stats.inserted} new, {stats.updated} "
                      f"updates, {stats.deleted} deletes) in {pace.elapsed():.0f} s, "
                      f"{len(state.open_ids)} open", flush=True)


def _wait_for_crm(dsn: str, pace: Pace, timeout: float) -> None:
    """Return once the CRM accepts connections again (or a stop is requested); raise after timeout."""
    deadline = time.monotonic() + timeout
    while not pace.stop.wait(0.5):
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise

"""The CRM load generator with realistic behaviour: LIVE (a rate of changes per second, now) and
REPLAY (a whole generated day, backdated, faster than real time).

Both drive the same `Simulator`: a discrete-event simulation of the contact centre that follows
`hrdv.crm.behaviour`. It keeps the open interactions, work orders and claims with their planned
futures in one heap ordered by simulated time, and turns each event into SQL statements. One
seeded RNG takes every decision, and the simulated clock advances by the plan, never by the wall
clock, so the same seed, the same starting database and the same start instant give the same
sequence of changes (ids, statuses, values). Only the business timestamps differ in live mode:
they are the CRM's own clock_timestamp(), as a real CRM's would be; in replay they are the
simulated instants.

  LIVE    change n happens at simulated time start + n / rate; the wall clock paces it. Each
          change is the next lifecycle step that is due, or else a new interaction (so a new
          stream starts with arrivals and settles into its steady mix as lifecycles come due).
  REPLAY  arrivals follow the day's curve (a Poisson process, thinned by each region's local
          intensity) and lifecycles run on simulated time; the day is played `speedup` times
          faster than real time (inf: as fast as PostgreSQL takes it).

Some calls and chats are abandoned: the customer hangs up in the queue before anyone answers
(status 'abandoned', abandoned_at; never assigned, answered or closed). Some answered contacts are
transferred to another queue of their channel, once or twice, before they close (queue_code
changes, transfer_count + 1; operator_id stays the operator who answered). Shares in Behaviour (abandon_share, transfer_share).

Besides the lifecycles, a small share of the steps (Behaviour.reference_change_share) changes a
reference entity: customers sign up, change tariff, status, segment or branch; contact persons,
employees, queues, branches and service areas change too (hrdv.crm.reference_changes).

Operators' working states (operator_states, when the CRM has the table): operators log in around
their shift's start and out after its end, go ready, are made busy by the ASSIGN step of a desk
contact the ACD routes to them (Behaviour.acd_share), do after-call work once its handling ends
and take breaks now and then. Each change closes the operator's open interval and opens the next
one, in the transaction of the step that causes it; timed changes (login, end of after-call work
or of a break, shift end) are events of the same heap. The bulk loader's history has no states:
an operator gets their first state from the first live or replay run that sees them.

The source-model change (migration 001, hrdv.crm.migrate) may be applied while the generator
runs. Until it sees it, every transaction first takes interactions' ROW EXCLUSIVE lock and then
looks for the new column: the migration's ALTER TABLE needs an ACCESS EXCLUSIVE lock, so either
it committed before that look (and is seen) or it waits for this transaction. From then on the
generator writes channel_detail and the status 'in_work' instead of 'in_progress'.
"""
from __future__ import annotations

import bisect
import heapq
import math
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from hrdv.crm import behaviour as bh
from hrdv.crm import reference
from hrdv.crm import reference_changes as rc
from hrdv.crm.behaviour import Behaviour, Step
from hrdv.pacing import Pace

MOSCOW = timezone(timedelta(hours=3))
# A CRM that is down longer than this (per outage) ends the live run; `hrdv up` starts it again.
RECONNECT_TIMEOUT_S = 300.0
MAX_FRUITLESS_SESSIONS = 5          # reconnected sessions in a row that committed nothing
REPEAT_HISTORY_LIMIT = 300_000      # recent interactions kept as repeat candidates
CUSTOMER_SAMPLE = 200_000           # customers kept in memory (evenly spaced ids)
TS = rc.TS  # simulated instant, or the CRM's clock
# Tables of the reference changes (hrdv.crm.reference_changes), in the order progress lists them.
REFERENCE_TABLES = ("customers", "contact_persons", "employees", "queues", "branches", "service_areas")

Statement = tuple[str, dict[str, Any]]

# --- SQL --------------------------------------------------------------------------------------
_INTERACTION_COLUMNS = """id, customer_id, channel_code, region_code, topic_code, queue_code,
    direction, status, subject, previous_interaction_id, created_at, updated_at, sla_due_at"""
_INTERACTION_VALUES = f"""%(id)s, %(customer)s, %(channel)s, %(region)s, %(topic)s, %(queue)s,
    'inbound', 'new', %(subject)s, %(previous)s, {TS}, {TS}, {TS} + make_interval(secs => %(sla_s)s)"""
INSERT_INTERACTION = f"INSERT INTO interactions ({_INTERACTION_COLUMNS}) VALUES ({_INTERACTION_VALUES})"
INSERT_INTERACTION_V2 = (f"INSERT INTO interactions ({_INTERACTION_COLUMNS}, channel_detail) "
                         f"VALUES ({_INTERACTION_VALUES}, %(detail)s)")
ASSIGN = f"UPDATE interactions SET status = 'assigned', operator_id = %(operator)s, updated_at = {TS} WHERE id = %(id)s"
RESPOND = f"""UPDATE interactions SET status = %(status)s,
    first_response_at = coalesce(first_response_at, {TS}), updated_at = {TS} WHERE id = %(id)s"""
CLOSE = f"""UPDATE interactions SET status = 'closed', closed_at = {TS},
    resolved_on_first_contact = %(fcr)s, updated_at = {TS} WHERE id = %(id)s"""
REOPEN = f"""UPDATE interactions SET status = 'reopened', closed_at = NULL, reopen_count = reopen_count + 1,
    resolved_on_first_contact = NULL, updated_at = {TS} WHERE id = %(id)s"""
# A back-office correction of a closed record: re-classified and its closing moved earlier
# (never before its first response or creation: the lifecycle order must still hold).
CORRECT = f"""UPDATE interactions SET topic_code = %(topic)s,
    closed_at = greatest(coalesce(first_response_at, created_at), closed_at - make_interval(secs => %(back_s)s)),
    updated_at = {TS} WHERE id = %(id)s AND closed_at IS NOT NULL"""
DELETE_INTERACTION = "DELETE FROM interactions WHERE id = %(id)s"
# The customer hangs up in the queue: over for good, never answered. Strictly after creation
# (greatest: the CRM's clock in live mode could repeat the creation's microsecond); one instant
# for abandoned_at and updated_at (clock_timestamp() twice would give two).
ABANDON = f"""UPDATE interactions SET (status, abandoned_at, updated_at) = (SELECT 'abandoned', moment, moment
    FROM (SELECT greatest({TS}, created_at + interval '1 microsecond') AS moment) AS m) WHERE id = %(id)s"""
# An answered contact transferred to another queue of its channel. operator_id stays the operator
# who answered (and transferred) it.
TRANSFER = f"""UPDATE interactions SET queue_code = %(queue)s, transfer_count = transfer_count + 1,
    updated_at = {TS} WHERE id = %(id)s"""

INSERT_WORK_ORDER = f"""INSERT INTO work_orders (id, interaction_id, customer_id, type, priority,
    service_area_code, status, sla_due_at, created_at, updated_at)
    VALUES (%(id)s, %(interaction)s, %(customer)s, %(type)s, %(priority)s, %(area)s, 'new',
            {TS} + make_interval(secs => %(sla_s)s), {TS}, {TS})"""
WO_ASSIGN = f"""UPDATE work_orders SET status = 'assigned', engineer_id = %(engineer)s,
    assigned_at = {TS}, updated_at = {TS} WHERE id = %(id)s"""
WO_REASSIGN = f"""UPDATE work_orders SET engineer_id = %(engineer)s, reassign_count = reassign_count + 1,
    updated_at = {TS} WHERE id = %(id)s"""
WO_START = f"UPDATE work_orders SET status = 'in_progress', updated_at = {TS} WHERE id = %(id)s"
WO_POSTPONE = f"""UPDATE work_orders SET status = 'postponed', postpone_count = postpone_count + 1,
    updated_at = {TS} WHERE id = %(id)s"""
WO_DONE = f"UPDATE work_orders SET status = 'done', completed_at = {TS}, updated_at = {TS} WHERE id = %(id)s"
WO_CANCEL = f"UPDATE work_orders SET status = 'cancelled', cancelled_at = {TS}, updated_at = {TS} WHERE id = %(id)s"

INSERT_CLAIM = f"""INSERT INTO claims (id, customer_id, interaction_id, category, amount_claimed,
    regulatory_due_at, status, created_at, updated_at)
    VALUES (%(id)s, %(customer)s, %(interaction)s, %(category)s, %(amount)s,
            {TS} + make_interval(secs => %(deadline_s)s), 'registered', {TS}, {TS})"""
CLAIM_REVIEW = f"UPDATE claims SET status = 'in_review', updated_at = {TS} WHERE id = %(id)s"
CLAIM_DECIDE = f"""UPDATE claims SET status = %(status)s, outcome = %(outcome)s, resolved_at = {TS},
    updated_at = {TS} WHERE id = %(id)s"""

# Operators' working states: close the open interval, open the next one at the same instant (the
# closed row's ended_at, so that an operator's intervals chain exactly, in live mode too where the
# instant is the CRM's clock). greatest(): a replay of an earlier day never ends a state before
# it started.
CLOSE_STATE = f"""UPDATE operator_states SET ended_at = greatest({TS}, started_at), updated_at = {TS}
    WHERE id = %(id)s"""
INSERT_STATE = f"""INSERT INTO operator_states (id, employee_id, state, started_at, interaction_id, updated_at)
    VALUES (%(id)s, %(employee)s, %(state)s,
            coalesce((SELECT ended_at FROM operator_states WHERE id = %(previous)s::bigint), {TS}),
            %(interaction)s, {TS})"""
HAS_OPERATOR_STATES = "SELECT to_regclass('operator_states') IS NOT NULL"
WORKING_STATES = ("logged_in", "ready", "busy", "after_call_work", "break")

HAS_CHANNEL_DETAIL = """SELECT EXISTS (SELECT 1 FROM pg_attribute
    WHERE attrelid = 'interactions'::regclass AND attname = 'channel_detail' AND NOT attisdropped)"""


# --- the CRM's reference data, as the generator needs it --------------------------------------
@dataclass
class Crm:
    regions: dict[str, tuple[float, float]]          # code -> (customers, utc_offset)
    customers: dict[str, list[rc.Customer]]          # region -> customers (a sample), by id
    topics: dict[str, str]                            # leaf code -> name
    channels: set[str]
    queues: dict[str, str]                            # code -> skill group (operators' too)
    operators: dict[str, list[tuple[int, str, float]]]  # skill group -> [(id, shift, utc offset)]
    areas_by_branch: dict[str, list[str]]
    areas_by_region: dict[str, list[str]]
    engineers_by_area: dict[str, list[int]]
    engineers_by_region: dict[str, list[int]]
    queue_channels: dict[str, str] = field(default_factory=dict)  # queue code -> its channel


def _group(pairs: list[tuple]) -> dict[Any, list]:
    """{first: [rest, ...]} from rows (first, *rest); a single rest value is kept bare."""
    grouped: dict[Any, list] = {}
    for first, *rest in pairs:
        grouped.setdefault(first, []).append(rest[0] if len(rest) == 1 else tuple(rest))
    return grouped


def _load_customers(cur: psycopg.Cursor, sample: int) -> dict[str, list[rc.Customer]]:
    """An evenly spaced sample of the customers per region (all of them below `sample`)."""
    total, top = cur.execute("SELECT count(*), coalesce(max(id), 0) FROM customers").fetchone()
    if total == 0:
        raise SystemExit("the CRM has no customers: load some first (hrdv.crm.bulk_load)")
    stride = max(1, math.ceil(total / sample))
    rows = cur.execute("""SELECT id, region_code, branch_code, tariff_code, coalesce(status, 'active'),
        segment FROM customers WHERE id %% %s = 0 ORDER BY id""", (stride,)).fetchall()
    return _group([(row[1], rc.Customer(*row)) for row in rows])


def load_crm(conn: psycopg.Connection, customer_sample: int = CUSTOMER_SAMPLE) -> Crm:
    with conn.cursor() as cur:
        customers = _load_customers(cur, customer_sample)
        counts = dict(cur.execute("SELECT region_code, count(*) FROM customers GROUP BY 1").fetchall())
        offsets = dict(cur.execute("SELECT code, utc_offset FROM regions").fetchall())
        topics = dict(cur.execute("""SELECT code, name FROM topics t WHERE NOT EXISTS
            (SELECT 1 FROM topics c WHERE c.parent_code = t.code) ORDER BY code""").fetchall())
        channels = {row[0] for row in cur.execute("SELECT code FROM channels")}
        queue_rows = cur.execute("SELECT code, coalesce(skill_group, code), channel_code FROM queues "
                                 "ORDER BY code").fetchall()
        operators = cur.execute("""SELECT e.skill_group, e.id, e.shift, r.utc_offset FROM employees e
            JOIN regions r ON r.code = e.region_code WHERE e.role = 'operator' ORDER BY e.id""").fetchall()
        areas = cur.execute("""SELECT s.code, s.branch_code, b.region_code FROM service_areas s
            JOIN branches b ON b.code = s.branch_code ORDER BY s.code""").fetchall()
        engineers = cur.execute("""SELECT id, service_area_code, region_code FROM employees
            WHERE role = 'engineer' ORDER BY id""").fetchall()
    return Crm(
        regions={code: (float(counts[code]), float(offsets[code])) for code in sorted(customers)},
        customers=customers, topics=topics, channels=channels,
        queues={code: group for code, group, _ in queue_rows},
        operators=_group(operators),
        areas_by_branch=_group([(b, a) for a, b, _ in areas]),
        areas_by_region=_group([(r, a) for a, _, r in areas]),
        engineers_by_area=_group([(a, e) for e, a, _ in engineers if a]),
        engineers_by_region=_group([(r, e) for e, _, r in engineers]),
        queue_channels={code: channel for code, _, channel in queue_rows},
    )


# --- simulation state ------------------------------------------------------------------------
@dataclass
class OpenInteraction:
    id: int
    customer: int
    branch: str | None
    region: str
    channel: str
    topic: str
    queue: str
    steps: deque[Step]
    plan: bh.InteractionPlan
    incident: bool = False
    reopened: bool = False
    work_order_spawned: bool = False
    handler: int | None = None  # the operator busy with it (operator_states), until handled


@dataclass
class OperatorState:
    """An operator's current state (operator_states' open row) and their next timed change."""

    id: int
    state: str | None = None          # None: the CRM has no state of theirs yet
    row: int | None = None            # operator_states.id of the open interval
    interaction: int | None = None    # busy / after_call_work: the contact
    shift_end: float = math.inf       # log out at the first chance after this
    next_break: float = math.inf      # take a break at the first chance after this
    token: int = -1                   # seq of their pending heap event; others are stale
    action: str | None = None         # what that event does


@dataclass
class OpenWorkOrder:
    id: int
    region: str
    area: str
    steps: deque[Step]


@dataclass
class OpenClaim:
    id: int
    outcome: str
    steps: deque[Step]


@dataclass
class Stats:
    changes: int = 0
    transactions: int = 0
    actions: Counter = field(default_factory=Counter)   # 'interactions.update' -> count
    migration_seen_at: int | None = None                  # change number when noticed
    elapsed_s: float = 0.0
    reconnects: int = 0                                   # outages of the CRM survived (live)
    in_doubt: Any = None  # (txid, counts if committed) of a transaction its connection lost

    def summary(self) -> str:
        ins = sum(n for k, n in self.actions.items() if k.endswith(".insert"))
        dele = sum(n for k, n in self.actions.items() if k.endswith(".delete"))
        rate = self.changes / self.elapsed_s if self.elapsed_s else 0.0
        return (f"{self.changes} changes ({ins} inserts, {self.changes - ins - dele} updates, "
                f"{dele} deletes) in {self.transactions} transactions, {self.elapsed_s:.1f} s, "
                f"{rate:.0f} changes/s")

    def state_summary(self) -> str:
        """'operator states 412 (14.8%)': row changes of operator_states and their share."""
        rows = sum(n for key, n in self.actions.items() if key.startswith("operator_states."))
        return f"operator states {rows} ({rows / self.changes if self.changes else 0.0:.1%})"

    def reference_summary(self) -> str:
        """'reference changes 52 (1.3%): customers 25, contact_persons 18, ...' (rows)."""
        tables: Counter = Counter()
        for key, n in self.actions.items():
            if key.split(".")[0] in REFERENCE_TABLES:
                tables[key.split(".")[0]] += n
        total = sum(tables.values())
        share = total / self.changes if self.changes else 0.0
        listed = ", ".join(f"{table} {tables[table]}" for table in REFERENCE_TABLES if tables[table])
        return f"reference changes {total} ({share:.1%})" + (f": {listed}" if listed else "")


class Simulator:
    """The contact centre on a simulated clock (epoch seconds). Pure apart from `crm`, the
    snapshot it was given: it returns SQL statements and never touches the database."""

    def __init__(self, crm: Crm, behaviour: Behaviour, rng: random.Random, start: float,
                 next_ids: dict[str, int], backdated: bool) -> None:
        self.crm, self.b, self.rng, self.backdated = crm, behaviour, rng, backdated
        self.next_ids = dict(next_ids)
        self.heap: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.interactions: dict[int, OpenInteraction] = {}
        self.work_orders: dict[int, OpenWorkOrder] = {}
        self.claims: dict[int, OpenClaim] = {}
        self.hist_t: list[float] = []       # created_at of recent interactions, sorted
        self.hist: list[tuple[int, int, str, str]] = []  # (id, customer, topic, region)
        self.deleted: set[int] = set()
        self.pending_claims: dict[int, OpenInteraction] = {}  # closed, their claim still to come
        self.incidents: list[bh.Incident] = []
        self.next_incident = start + bh.next_incident_gap(behaviour, rng)
        self.arrivals: deque[float] = deque()  # arrival instants within the last hour
        self.migrated = False
        self.topic_weights = bh.topic_weights(behaviour, sorted(crm.topics))
        # Only channels this CRM knows (an older CRM has fewer): the mix renormalises itself.
        self.channel_mix = {c: w for c, w in behaviour.channel_mix.items() if c in crm.channels}
        self._weights_cache: tuple[int, dict[str, float]] | None = None
        self._staff_cache: tuple[int, float] | None = None
        self.refs: rc.ReferenceChanges | None = None  # reference changes; _prepare loads them
        # Operators' working states, when the CRM has operator_states (_next_ids tells).
        self.states = "operator_states" in self.next_ids
        self.operators: dict[int, OperatorState] = {}
        self._op_index: dict[int, tuple[str, str, float]] | None = None  # id -> (group, shift, offset)

    # -- clock and scheduling --
    def ts(self, t: float) -> datetime | None:
        return datetime.fromtimestamp(t, timezone.utc) if self.backdated else None

    def schedule(self, t: float, kind: str, key: int) -> None:
        self.seq += 1  # ties break by insertion order: deterministic
        heapq.heappush(self.heap, (t, self.seq, kind, key))

    def next_due(self) -> float:
        return self.heap[0][0] if self.heap else math.inf

    def new_id(self, table: str) -> int:
        self.next_ids[table] += 1
        return self.next_ids[table] - 1

    # -- what happens next --
    def live_step(self, t: float) -> list[Statement]:
        """The change of the live stream at simulated instant t: a reference change (drawn
        with Behaviour.reference_change_share), else the next lifecycle step that is due, else
        a new interaction."""
        if self.reference_due():
            return self.reference_change(t)
        return self.pop_event() if self.next_due() <= t else self.arrival(t)

    def reference_due(self) -> bool:
        return self.refs is not None and self.refs.due()

    def reference_change(self, t: float) -> list[Statement]:
        """A change of a customer, contact person, employee, queue, branch or service area."""
        assert self.refs is not None
        self._staff_cache = None  # operators may have been hired or moved shift
        self._op_index = None
        return self.refs.change(self.ts(t))

    # -- arrivals --
    def region_weights(self, t: float) -> dict[str, float]:
        minute = int(t // 60)  # the curve moves slowly: one evaluation per simulated minute
        if self._weights_cache is None or self._weights_cache[0] != minute:
            at = datetime.fromtimestamp(t, timezone.utc)
            self._weights_cache = (minute, bh.region_weights(self.b, at, self.crm.regions, self.incidents))
        return self._weights_cache[1]

    def roll_incidents(self, t: float) -> None:
        while self.next_incident <= t:
            at = datetime.fromtimestamp(self.next_incident, timezone.utc)
            sizes = {code: n for code, (n, _) in self.crm.regions.items()}
            self.incidents.append(bh.draw_incident(self.b, self.rng, at, sizes, sorted(self.crm.topics)))
            self.next_incident += bh.next_incident_gap(self.b, self.rng)
            self._weights_cache = None
        now = datetime.fromtimestamp(t, timezone.utc)
        self.incidents = [i for i in self.incidents if i.active(now) or i.in_tail(self.b, now)]

    def queue_factor(self, t: float) -> float:
        while self.arrivals and self.arrivals[0] <= t - 3600:
            self.arrivals.popleft()
        minute = int(t // 60)
        if self._staff_cache is None or self._staff_cache[0] != minute:
            at = datetime.fromtimestamp(t, timezone.utc)
            staff = sum(1 for group in self.crm.operators.values() for _, shift, offset in group
                        if bh.on_shift(self.b, shift, bh.local_time(at, offset).hour))
            self._staff_cache = (minute, float(staff))
        if not self.crm.operators:
            return 1.0  # a CRM without operators in its data: no capacity model to apply
        return bh.queue_factor(self.b, len(self.arrivals), self._staff_cache[1])

    def _repeat_of(self, t: float, boost: float) -> tuple[int, int, str, str] | None:
        bucket = bh.repeat_bucket(self.b, self.rng, boost)
        if bucket is None:
            return None
        low, high = bh.REPEAT_WINDOWS[bucket]
        first = bisect.bisect_left(self.hist_t, t - high)
        last = bisect.bisect_right(self.hist_t, t - low)
        if last <= first:
            return None  # no earlier contact that old: a first contact after all
        row = self.hist[self.rng.randrange(first, last)]
        return None if row[0] in self.deleted else row

    def arrival(self, t: float) -> list[Statement]:
        """A new interaction at simulated instant t."""
        self.roll_incidents(t)
        region = bh.pick(self.rng, self.region_weights(t))
        now = datetime.fromtimestamp(t, timezone.utc)
        incident = next((i for i in self.incidents if i.region == region and i.active(now)), None)
        tail = any(i.region == region and i.in_tail(self.b, now) for i in self.incidents)
        repeat = self._repeat_of(t, self.b.incident_repeat_boost if (incident or tail) else 1.0)
        if repeat is not None:
            previous, customer, topic, region = repeat
            branch = None
        else:
            previous = None
            chosen = self.rng.choice(self.crm.customers[region])
            customer, branch = chosen.id, chosen.branch
            on_incident = incident is not None and self.rng.random() < bh.incident_topic_share(self.b)
            topic = incident.topic if on_incident else bh.pick(self.rng, self.topic_weights)
        channel = bh.pick(self.rng, self.channel_mix)
        return self._create_interaction(t, customer, branch, region, channel, topic, previous,
                                        incident is not None and topic == incident.topic)

    def _create_interaction(self, t: float, customer: int, branch: str | None, region: str,
                            channel: str, topic: str, previous: int | None,
                            incident: bool) -> list[Statement]:
        plan = bh.plan_interaction(self.b, self.rng, channel, topic, self.queue_factor(t), incident)
        self.arrivals.append(t)
        iid = self.new_id("interactions")
        queue = reference.queue_for(channel, topic) if topic.split(".")[0] in reference.TOPIC_SKILL else ""
        if queue not in self.crm.queues:
            queue = f"q_{channel}"
        subject = ("ТЕСТ: проверка интеграции" if plan.test_record else self.crm.topics.get(topic))
        params = dict(id=iid, customer=customer, channel=channel, region=region, topic=topic,
                      queue=queue, subject=subject, previous=previous, sla_s=plan.sla_s, ts=self.ts(t))
        sql = INSERT_INTERACTION
        if self.migrated:
            sql, params["detail"] = INSERT_INTERACTION_V2, bh.pick(self.rng, self.b.channel_detail_mix[channel])
        item = OpenInteraction(iid, customer, branch, region, channel, topic, queue, deque(plan.steps),
                               plan, incident)
        self.interactions[iid] = item
        index = bisect.bisect_right(self.hist_t, t)
        self.hist_t.insert(index, t)
        self.hist.insert(index, (iid, customer, topic, region))
        if len(self.hist_t) > REPEAT_HISTORY_LIMIT * 1.1:  # bounded memory: forget the oldest
            drop = len(self.hist_t) - REPEAT_HISTORY_LIMIT
            del self.hist_t[:drop], self.hist[:drop]
        self.schedule(t + item.steps[0].delay_s, "i", iid)
        return [(sql, params)]

    # -- lifecycle events --
    def pop_event(self) -> list[Statement]:
        t, seq, kind, key = heapq.heappop(self.heap)
        if kind == "o":
            return self._operator_event(t, seq, key)
        handler = {"i": self._interaction_step, "w": self._work_order_step,
                   "c": self._claim_step, "newclaim": self._new_claim}[kind]
        return handler(t, key)

    def _continue(self, t: float, kind: str, key: int, steps: deque[Step]) -> None:
        if steps:
            self.schedule(t + steps[0].delay_s, kind, key)

    def _interaction_step(self, t: float, iid: int) -> list[Statement]:
        item = self.interactions[iid]
        action = item.steps.popleft().action
        ts = self.ts(t)
        out: list[Statement] = []
        if action == "assign":
            operator, busy = self._assign(t, item)
            out.append((ASSIGN, dict(id=iid, operator=operator, ts=ts)))
            out += busy
        elif action == "respond":
            status = "in_work" if self.migrated else "in_progress"
            out.append((RESPOND, dict(id=iid, status=status, ts=ts)))
            if item.plan.work_order and not item.work_order_spawned:
                out += self._new_work_order(t, item)
            # The operator's handling ends with the first response, unless the conversation goes
            # on: a transfer, or a closing in the same conversation (resolved at once).
            if item.handler is not None and not self._conversation_goes_on(item):
                out += self._handling_done(t, item)
        elif action == "transfer":
            out += self._transfer(t, item)
        elif action == "abandon":
            out.append((ABANDON, dict(id=iid, ts=ts)))
        elif action == "close":
            fcr = item.plan.resolved_first_contact and not item.reopened
            out.append((CLOSE, dict(id=iid, fcr=fcr, ts=ts)))
            if item.handler is not None:
                out += self._handling_done(t, item)
        elif action == "reopen":
            item.reopened = True
            out.append((REOPEN, dict(id=iid, ts=ts)))
        elif action == "correct":
            siblings = sorted(c for c in self.crm.topics
                              if c.split(".")[0] == item.topic.split(".")[0]) or [item.topic]
            out.append((CORRECT, dict(id=iid, topic=self.rng.choice(siblings),
                                      back_s=self.rng.uniform(60, 1800), ts=ts)))
        elif action == "delete":
            self.deleted.add(iid)
            out.append((DELETE_INTERACTION, dict(id=iid)))
        self._continue(t, "i", iid, item.steps)
        if not item.steps:
            del self.interactions[iid]
            if item.plan.claim and not item.plan.test_record:
                self.schedule(t + bh.claim_delay(self.b, self.rng), "newclaim", iid)
                self.pending_claims[iid] = item
        return out

    @staticmethod
    def _conversation_goes_on(item: OpenInteraction) -> bool:
        """Whether the operator stays on the contact after this step: it is transferred next, or
        closed next in the same conversation (resolved at first contact)."""
        if not item.steps:
            return False
        following = item.steps[0].action
        return following == "transfer" or (following == "close" and item.plan.resolved_first_contact
                                           and not item.reopened)

    def _transfer(self, t: float, item: OpenInteraction) -> list[Statement]:
        """The operator hands the contact to another queue of its channel (drawn among them); their
        handling ends there (the queue takes it on from its list: no operator's state changes, and
        operator_id stays who answered). Nothing is transferred where the channel has a single
        queue; the handling then ends as it would have without the transfer."""
        others = sorted(code for code, channel in self.crm.queue_channels.items()
                        if channel == item.channel and code != item.queue)
        if not others:
            if item.handler is not None and not self._conversation_goes_on(item):
                return self._handling_done(t, item)
            return []
        out = self._handling_done(t, item) if item.handler is not None else []
        item.queue = self.rng.choice(others)
        return [(TRANSFER, dict(id=item.id, queue=item.queue, ts=self.ts(t)))] + out

    def _operator(self, t: float, item: OpenInteraction) -> int | None:
        group = self.crm.queues.get(item.queue, "")
        candidates = self.crm.operators.get(group) or [o for g in sorted(self.crm.operators)
                                                       for o in self.crm.operators[g]]
        if not candidates:
            return None
        at = datetime.fromtimestamp(t, timezone.utc)
        working = [o for o in candidates if bh.on_shift(self.b, o[1], bh.local_time(at, o[2]).hour)]
        return self.rng.choice(working or candidates)[0]

    # -- operators' working states --
    def _ops(self, t: float) -> dict[int, tuple[str, str, float]]:
        """id -> (skill group, shift, utc offset) of every operator; an operator seen for the
        first time (hired, or the first run on this CRM) gets a login planned."""
        if self._op_index is None:
            self._op_index = {oid: (group, shift, offset) for group in sorted(self.crm.operators)
                              for oid, shift, offset in self.crm.operators[group]}
            for oid in sorted(self._op_index):
                if oid not in self.operators:
                    self.operators[oid] = op = OperatorState(oid)
                    self._plan_login(t, op)
        return self._op_index

    def _shift(self, op: OperatorState, t: float) -> tuple[float, float]:
        _, shift, offset = self._ops(t)[op.id]
        return bh.shift_window(self.b, shift, offset, t)

    def _at(self, t: float, op: OperatorState, action: str) -> None:
        """Plan the operator's next timed change (the previously planned one becomes stale)."""
        self.schedule(t, "o", op.id)
        op.token, op.action = self.seq, action

    def _plan_login(self, t: float, op: OperatorState) -> None:
        start, _ = self._shift(op, t)
        spread = self.rng.uniform(0, self.b.login_spread_s)
        # Under way already (first seen on shift): log in soon; else a little before it starts.
        self._at(t + spread if start <= t else max(t, start - spread), op, "login")

    def _set_state(self, t: float, op: OperatorState, state: str,
                   interaction: int | None = None) -> list[Statement]:
        ts, out = self.ts(t), []
        if op.row is not None:
            out.append((CLOSE_STATE, dict(id=op.row, ts=ts)))
        row = self.new_id("operator_states")
        out.append((INSERT_STATE, dict(id=row, employee=op.id, state=state, previous=op.row,
                                       interaction=interaction, ts=ts)))
        op.state, op.row, op.interaction = state, row, interaction
        return out

    def _assign(self, t: float, item: OpenInteraction) -> tuple[int | None, list[Statement]]:
        """The operator an interaction is assigned to, and the state change it causes: a desk
        contact routed by the ACD (Behaviour.acd_share) makes a logged-in operator busy."""
        if (self.states and not item.plan.test_record and item.channel in self.b.desk_channels
                and self.rng.random() < self.b.acd_share):
            self._ops(t)
            group = self.crm.queues.get(item.queue, "")
            candidates = self.crm.operators.get(group) or [o for g in sorted(self.crm.operators)
                                                           for o in self.crm.operators[g]]
            staff = [self.operators[o[0]] for o in candidates if o[0] in self.operators]
            # Not one whose shift is over or whose break is due: they finish what they have.
            staff = [op for op in staff if t < min(op.shift_end, op.next_break)]
            pool = ([op for op in staff if op.state == "ready"]
                    or [op for op in staff if op.state in ("after_call_work", "busy")])
            if pool:
                op = self.rng.choice(pool)
                if op.state == "busy" and op.interaction in self.interactions:
                    self.interactions[op.interaction].handler = None  # put on hold
                item.handler = op.id
                op.token = -1  # no timed change while busy: the handling's end decides
                return op.id, self._set_state(t, op, "busy", item.id)
        return self._operator(t, item), []

    def _handling_done(self, t: float, item: OpenInteraction) -> list[Statement]:
        op = self.operators.get(item.handler) if item.handler is not None else None
        item.handler = None
        if op is None or op.state != "busy" or op.interaction != item.id:
            return []
        out = self._set_state(t, op, "after_call_work", item.id)
        self._at(t + bh.lognormal(self.rng, self.b.after_call_work_median_s,
                                  self.b.after_call_work_sigma), op, "available")
        return out

    def _available(self, t: float, op: OperatorState) -> list[Statement]:
        """After logging in, after-call work or a break: log out if the shift is over, take a
        break if one is due, else ready (until the shift's end or the next break)."""
        if t >= op.shift_end:
            out = self._set_state(t, op, "logged_out")
            op.shift_end = op.next_break = math.inf
            self._plan_login(t, op)
        elif t >= op.next_break:
            out = self._set_state(t, op, "break")
            self._at(t + bh.lognormal(self.rng, self.b.break_median_s, 0.4), op, "break_end")
        else:
            out = self._set_state(t, op, "ready")
            self._at(min(op.shift_end, op.next_break), op, "available")
        return out

    def _operator_event(self, t: float, seq: int, oid: int) -> list[Statement]:
        op = self.operators.get(oid)
        if op is None or seq != op.token:
            return []  # superseded: the operator took a contact, or was planned again
        op.token, action = -1, op.action
        if action == "login":
            start, end = self._shift(op, t)
            if start - t > self.b.login_spread_s + 1:  # moved to another shift meanwhile
                self._plan_login(t, op)
                return []
            op.shift_end = end + self.rng.uniform(0, self.b.logout_spread_s)
            op.next_break = t + bh.lognormal(self.rng, self.b.break_every_median_s, 0.4)
            out = self._set_state(t, op, "logged_in")
            self._at(t + bh.lognormal(self.rng, self.b.login_ready_median_s, 0.5), op, "available")
            return out
        if action == "break_end":
            op.next_break = t + bh.lognormal(self.rng, self.b.break_every_median_s, 0.4)
        elif action == "handled":  # resumed busy with a contact no longer open
            out = self._set_state(t, op, "after_call_work", op.interaction)
            self._at(t + bh.lognormal(self.rng, self.b.after_call_work_median_s,
                                      self.b.after_call_work_sigma), op, "available")
            return out
        return self._available(t, op)

    def _resume_states(self, conn: psycopg.Connection, start: float) -> None:
        """Take every operator's open state from the CRM and plan what comes next (by id)."""
        operators = {oid for group in self.crm.operators.values() for oid, _, _ in group}
        resumed = [OperatorState(oid, state, row, interaction) for oid, row, state, interaction
                   in conn.execute("""SELECT employee_id, id, state, interaction_id FROM operator_states
                       WHERE ended_at IS NULL ORDER BY employee_id""") if oid in operators]
        for op in resumed:
            self.operators[op.id] = op
        self._ops(start)  # the operators without a state: a login at their shift
        for op in resumed:
            if op.state not in WORKING_STATES:
                self._plan_login(start, op)
                continue
            shift_start, shift_end = self._shift(op, start)
            op.shift_end = (shift_end if shift_start <= start else start) + self.rng.uniform(
                0, self.b.logout_spread_s)
            op.next_break = start + bh.lognormal(self.rng, self.b.break_every_median_s, 0.4)
            if op.state == "busy":
                item = self.interactions.get(op.interaction)
                if (item is not None and item.handler is None and item.steps
                        and item.steps[0].action == "respond"):
                    item.handler = op.id  # its first response ends the handling
                else:
                    self._at(start + bh.lognormal(self.rng, self.b.after_call_work_median_s, 0.5),
                             op, "handled")
            elif op.state == "break":
                self._at(start + bh.lognormal(self.rng, self.b.break_median_s, 0.4), op, "break_end")
            elif op.state == "ready":
                self._at(min(op.shift_end, op.next_break), op, "available")
            else:  # logged_in, after_call_work
                self._at(start + bh.lognormal(self.rng, self.b.after_call_work_median_s, 0.5),
                         op, "available")

    def _area(self, item: OpenInteraction) -> str | None:
        areas = (self.crm.areas_by_branch.get(item.branch or "") or self.crm.areas_by_region.get(item.region))
        return self.rng.choice(areas) if areas else None

    def _engineer(self, order: OpenWorkOrder) -> int | None:
        pool = (self.crm.engineers_by_area.get(order.area)
                or self.crm.engineers_by_region.get(order.region)
                or [e for r in sorted(self.crm.engineers_by_region) for e in self.crm.engineers_by_region[r]])
        return self.rng.choice(pool) if pool else None

    def _new_work_order(self, t: float, item: OpenInteraction) -> list[Statement]:
        item.work_order_spawned = True
        area = self._area(item)
        if area is None or not (self.crm.engineers_by_area or self.crm.engineers_by_region):
            return []  # no territory or no engineers in this CRM: nobody could take the order
        plan = bh.plan_work_order(self.b, self.rng)
        wid = self.new_id("work_orders")
        kind = self.b.work_order_types.get(item.topic.split(".")[0], "line_check")
        order = OpenWorkOrder(wid, item.region, area, deque(plan.steps))
        self.work_orders[wid] = order
        self._continue(t, "w", wid, order.steps)
        return [(INSERT_WORK_ORDER, dict(id=wid, interaction=item.id, customer=item.customer,
                                         type=kind, priority=int(plan.priority), area=area,
                                         sla_s=plan.sla_s, ts=self.ts(t)))]

    def _work_order_step(self, t: float, wid: int) -> list[Statement]:
        order = self.work_orders[wid]
        action = order.steps.popleft().action
        params: dict[str, Any] = dict(id=wid, ts=self.ts(t))
        if action in ("assign", "reassign"):
            params["engineer"] = self._engineer(order)  # never None: orders need engineers
        sql = {"assign": WO_ASSIGN, "reassign": WO_REASSIGN, "start": WO_START,
               "postpone": WO_POSTPONE, "done": WO_DONE, "cancel": WO_CANCEL}[action]
        self._continue(t, "w", wid, order.steps)
        if not order.steps:
            del self.work_orders[wid]
        return [(sql, params)]

    def _new_claim(self, t: float, iid: int) -> list[Statement]:
        item = self.pending_claims.pop(iid)
        if iid in self.deleted:
            return []
        plan = bh.plan_claim(self.b, self.rng)
        situation = ("outage" if item.incident else "breach" if item.plan.breaches_sla
                     else "billing" if item.topic.startswith("billing") else "other")
        cid = self.new_id("claims")
        self.claims[cid] = OpenClaim(cid, plan.outcome, deque(plan.steps))
        self._continue(t, "c", cid, self.claims[cid].steps)
        return [(INSERT_CLAIM, dict(id=cid, customer=item.customer, interaction=iid,
                                    category=self.b.claim_categories[situation],
                                    amount=plan.amount_rub, deadline_s=plan.deadline_s, ts=self.ts(t)))]

    def _claim_step(self, t: float, cid: int) -> list[Statement]:
        claim = self.claims[cid]
        action = claim.steps.popleft().action
        self._continue(t, "c", cid, claim.steps)
        if action == "review":
            return [(CLAIM_REVIEW, dict(id=cid, ts=self.ts(t)))]
        del self.claims[cid]
        status = "rejected" if claim.outcome == "no_grounds" else "resolved"
        return [(CLAIM_DECIDE, dict(id=cid, status=status, outcome=claim.outcome, ts=self.ts(t)))]

    # -- resuming what the database already has open --
    def resume(self, conn: psycopg.Connection, start: float) -> None:
        """Schedule the rest of the life of every open interaction, work order and claim, and
        remember recent interactions as repeat candidates. Ordered by id: deterministic."""
        self._resume_history(conn, start)
        for row in conn.execute("""SELECT i.id, i.customer_id, c.branch_code, i.region_code,
                i.channel_code, i.topic_code, i.queue_code, i.status, i.updated_at, i.transfer_count
                FROM interactions i
                JOIN customers c ON c.id = i.customer_id
                WHERE i.closed_at IS NULL AND i.abandoned_at IS NULL ORDER BY i.id"""):
            self._resume_interaction(start, *row)
        for wid, region, area, status, updated in conn.execute("""SELECT w.id, b.region_code,
                w.service_area_code, w.status, w.updated_at FROM work_orders w
                JOIN service_areas s ON s.code = w.service_area_code JOIN branches b ON b.code = s.branch_code
                WHERE w.status NOT IN ('done', 'cancelled') ORDER BY w.id"""):
            plan = bh.plan_work_order(self.b, self.rng)
            after = {"new": None, "assigned": "assign", "in_progress": "start", "postponed": "postpone"}
            steps = _after(plan.steps, after.get(status), [Step(600, "start"), Step(3600, "done")])
            self.work_orders[wid] = OpenWorkOrder(wid, region, area, steps)
            self._continue(max(start, updated.timestamp()), "w", wid, steps)
        for cid, status, updated in conn.execute("""SELECT id, status, updated_at FROM claims
                WHERE status IN ('registered', 'in_review') ORDER BY id"""):
            plan = bh.plan_claim(self.b, self.rng)
            steps = deque(plan.steps[1:] if status == "in_review" else plan.steps)
            self.claims[cid] = OpenClaim(cid, plan.outcome, steps)
            self._continue(max(start, updated.timestamp()), "c", cid, steps)
        if self.states:
            self._resume_states(conn, start)

    def _resume_history(self, conn: psycopg.Connection, start: float) -> None:
        since = datetime.fromtimestamp(start - 30 * 86400, timezone.utc)
        rows = conn.execute("""SELECT created_at, id, customer_id, topic_code, region_code
            FROM interactions WHERE created_at >= %s ORDER BY created_at DESC, id DESC LIMIT %s""",
                            (since, REPEAT_HISTORY_LIMIT)).fetchall()
        for created, *rest in reversed(rows):
            self.hist_t.append(created.timestamp())
            self.hist.append(tuple(rest))

    def _resume_interaction(self, start: float, iid: int, customer: int, branch: str | None,
                            region: str, channel: str, topic: str, queue: str, status: str,
                            updated: datetime, transfers: int) -> None:
        # Only a contact nobody has taken yet can still be abandoned.
        plan = bh.plan_interaction(self.b, self.rng, channel, topic, may_abandon=status == "new")
        after = {"new": None, "assigned": "assign", "in_progress": "respond", "in_work": "respond",
                 "reopened": "reopen"}
        steps = _after(plan.steps, after.get(status, "respond"),
                       [Step(300, "respond"), Step(3600, "close")] if status == "reopened" else [Step(3600, "close")])
        if plan.test_record:  # its test-record plan made no sense for a real open row
            steps = deque([Step(3600, "close")])
        if transfers:  # transferred already: not again (at most twice in all)
            steps = deque(step for step in steps if step.action != "transfer")
        item = OpenInteraction(iid, customer, branch, region, channel, topic, queue, steps, plan,
                               work_order_spawned=status not in ("new", "assigned"))
        self.interactions[iid] = item
        self._continue(max(start, updated.timestamp()), "i", iid, steps)


def _after(steps: tuple[Step, ...], action: str | None, fallback: list[Step]) -> deque[Step]:
    """The steps after the first `action` (all of them for None); `fallback` if it is absent."""
    if action is None:
        return deque(steps)
    for index, step in enumerate(steps):
        if step.action == action:
            return deque(steps[index + 1:]) or deque(fallback)
    return deque(fallback)


# --- running against PostgreSQL ----------------------------------------------------------------
def _next_ids(conn: psycopg.Connection) -> dict[str, int]:
    query = sql.SQL("SELECT coalesce(max(id), 0) + 1 FROM {}")
    tables = ["interactions", "work_orders", "claims", "customers", "contact_persons", "employees"]
    if conn.execute(HAS_OPERATOR_STATES).fetchone()[0]:
        tables.append("operator_states")  # an older CRM without it: no operators' states
    return {table: conn.execute(query.format(sql.Identifier(table))).fetchone()[0] for table in tables}


def _sync_identities(conn: psycopg.Connection) -> None:
    """work_orders, claims, contact_persons, employees and operator_states have identity ids, but
    the generator writes explicit ones (max+1: deterministic); move the sequences past them so that
    another writer relying on the identity does not collide."""
    tables = ["work_orders", "claims", "contact_persons", "employees"]
    if conn.execute(HAS_OPERATOR_STATES).fetchone()[0]:
        tables.append("operator_states")
    for table in tables:
        conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), max(id)) FROM {} "
                             "HAVING max(id) IS NOT NULL").format(
            sql.Literal(table), sql.Identifier(table)))


def _prepare(conn: psycopg.Connection, behaviour: Behaviour, rng: random.Random, start: float,
             backdated: bool) -> Simulator:
    crm = load_crm(conn)
    sim = Simulator(crm, behaviour, rng, start, _next_ids(conn), backdated)
    sim.resume(conn, start)
    sample = [c for group in crm.customers.values() for c in group]
    sim.refs = rc.ReferenceChanges(crm, rc.load_state(conn, sample), behaviour, rng, sim.new_id)
    sim.migrated = conn.execute(HAS_CHANNEL_DETAIL).fetchone()[0]
    return sim


def _notice_migration(conn: psycopg.Connection, sim: Simulator, stats: Stats) -> None:
    """Inside the transaction, before any write: see migration 001 if it has committed."""
    if sim.migrated:
        return
    conn.execute("LOCK TABLE interactions IN ROW EXCLUSIVE MODE")
    if conn.execute(HAS_CHANNEL_DETAIL).fetchone()[0]:
        sim.migrated = True
        stats.migration_seen_at = stats.changes
        print(f"generator: migration 001 seen after {stats.changes} changes: writing "
              "channel_detail and status 'in_work' from now on", flush=True)


def action_of(text: str) -> str:
    """'table.verb' of a statement that starts INSERT INTO t, UPDATE t or DELETE FROM t."""
    words = text.split(maxsplit=3)
    table = words[2] if words[0] in ("INSERT", "DELETE") else words[1]
    return f"{table.split('(')[0]}.{ {'INSERT': 'insert', 'DELETE': 'delete'}.get(words[0], 'update')}"


def _apply(cur: psycopg.Cursor, statements: list[Statement], stats: Stats) -> None:
    for text, params in statements:
        cur.execute(text, params)
        stats.changes += 1
        stats.actions[action_of(text)] += 1


def _progress(stats: Stats, sim: Simulator, pace: Pace, mode: str) -> None:
    stats.elapsed_s = pace.elapsed()
    print(f"generator ({mode}): {stats.summary()}; open: {len(sim.interactions)} interactions, "
          f"{len(sim.work_orders)} work orders, {len(sim.claims)} claims; "
          f"{stats.reference_summary()}; {stats.state_summary()}", flush=True)


@dataclass
class _Counts:
    """What Stats counts per change, to take back a transaction that did not commit."""

    changes: int
    actions: Counter
    migration_seen_at: int | None

    @classmethod
    def of(cls, stats: "Stats") -> "_Counts":
        return cls(stats.changes, stats.actions.copy(), stats.migration_seen_at)

    def restore(self, stats: "Stats") -> None:
        stats.changes, stats.actions, stats.migration_seen_at = (
            self.changes, self.actions.copy(), self.migration_seen_at)


def _settle_in_doubt(conn: psycopg.Connection, stats: Stats) -> None:
    """Count the transaction that was in flight when the connection was lost if, and only if,
    the CRM committed it (txid_status: 'committed'; 'aborted' or unknown: it did not count)."""
    if stats.in_doubt is None:
        return
    (xid, counts), stats.in_doubt = stats.in_doubt, None
    status = conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()[0]
    if status == "committed":
        counts.restore(stats)
        stats.transactions += 1
    print(f"generator (live): the transaction in flight when the CRM was lost: {status}", flush=True)


def run_live(dsn: str, rate: float, duration: float | None = None, max_changes: int | None = None,
             seed: int = 1, behaviour: Behaviour = Behaviour(), changes_per_transaction: int = 5,
             progress_every: float = 10.0, start: datetime | None = None,
             reconnect_timeout: float = RECONNECT_TIMEOUT_S, stop: threading.Event | None = None) -> Stats:
    """Write about `rate` changes per second (business times from the CRM's clock) until
    `duration` seconds or `max_changes` changes have passed, or `stop` is set (a transaction under
    way is committed first). `start` fixes the simulated clock's origin (default: now); with the same seed, database and start the changes are the same.

    A lost connection (PostgreSQL crashed, restarted, was failed over) is not fatal: the
    generator reconnects with backoff for up to `reconnect_timeout` s per outage, then rebuilds
    its simulation from the CRM's committed rows (see _live_session). Only committed changes
    are counted.
    """
    pace = Pace(rate, duration, max_changes)
    origin = (start or datetime.now(timezone.utc)).timestamp()
    stats = Stats()
    rng = random.Random(seed)
    fruitless = 0  # sessions in a row that committed nothing: a fault that reconnecting won't cure
    while True:
        committed = stats.transactions
        try:
            _live_session(dsn, pace, stats, rng, behaviour, origin, rate, changes_per_transaction,
                          progress_every, stop)
            return stats
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            fruitless = 0 if stats.transactions > committed else fruitless + 1
            if fruitless > MAX_FRUITLESS_SESSIONS:
                raise
            _reconnect(dsn, error, stats, reconnect_timeout)


def _live_session(dsn: str, pace: Pace, stats: Stats, rng: random.Random, behaviour: Behaviour,
                  origin: float, rate: float, per_transaction: int, progress_every: float,
                  stop: threading.Event | None = None) -> None:
    """One connection's worth of the live run, until the run is done or the connection fails.

    The simulation is built from the CRM at every (re)connection: open lifecycles, next ids and
    repeat candidates are what the CRM has committed, so a transaction lost with the connection
    (it may or may not have committed) leaves nothing behind in memory. The simulated clock goes
    on from the change the run has reached.
    """
    with psycopg.connect(dsn, application_name="hrdv-live", autocommit=True,
                         connect_timeout=10) as conn:
        _settle_in_doubt(conn, stats)
        first = stats.transactions == 0 and stats.changes == 0
        sim = _prepare(conn, behaviour, rng, origin + stats.changes / rate, backdated=False)
        if first:
            pace.begin()
        while not pace.done(stats.changes) and not (stop and stop.is_set()):
            batch = pace.due(stats.changes, per_transaction)
            if batch == 0:
                pace.nap()
                continue
            _live_transaction(conn, sim, stats, rate, origin, batch)
            if pace.report_due(progress_every):
                _progress(stats, sim, pace, "live")
        _sync_identities(conn)
        _progress(stats, sim, pace, "live, done")


def _reconnect(dsn: str, error: Exception, stats: Stats, timeout: float) -> None:
    """Wait, with exponential backoff (0.5 s doubling up to 5 s), until the CRM accepts a
    connection again; raise the last error after `timeout` s. Each step is logged."""
    began = time.monotonic()
    stats.reconnects += 1
    print(f"generator (live): lost the CRM after {stats.changes} committed changes "
          f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}); "
          f"reconnecting (outage #{stats.reconnects})", flush=True)

    def log_attempt(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        reason = str(failure).strip().splitlines()[0] if failure and str(failure).strip() else "?"
        print(f"generator (live): CRM not reachable yet (attempt {state.attempt_number}, "
              f"{reason}); next try in {state.next_action.sleep:.1f} s", flush=True)

    for attempt in Retrying(retry=retry_if_exception_type(psycopg.OperationalError),
                            wait=wait_exponential(multiplier=0.5, max=5),
                            stop=stop_after_delay(timeout), before_sleep=log_attempt, reraise=True):
        with attempt:
            psycopg.connect(dsn, connect_timeout=3).close()
    print(f"generator (live): reconnected after {time.monotonic() - began:.1f} s; "
          "re-reading open lifecycles and next ids from the CRM", flush=True)


def _live_transaction(conn: psycopg.Connection, sim: Simulator, stats: Stats, rate: float,
                      origin: float, batch: float) -> None:
    # Pipeline mode: the statements of a transaction go out without waiting for each answer
    # (one round trip instead of one per statement); the commit's WAL flush still dominates.
    before = _Counts.of(stats)
    xid: int | None = None
    try:
        with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
            # The transaction's id, so that after a lost connection txid_status() can tell
            # whether its COMMIT went through (its answer may be what was lost).
            xid = conn.execute("SELECT txid_current()").fetchone()[0]
            _notice_migration(conn, sim, stats)
            target = stats.changes + batch
            while stats.changes < target:
                t = origin + stats.changes / rate  # the planned instant of this change
                _apply(cur, sim.live_step(t), stats)
    except BaseException:
        # Not known to be committed: the changes do not count until _settle_in_doubt has asked
        # the CRM. `sim` has moved on already; the caller drops it and rebuilds it from the CRM.
        stats.in_doubt = None if xid is None else (xid, _Counts.of(stats))
        before.restore(stats)
        raise
    stats.transactions += 1


def run_replay(dsn: str, day: date, speedup: float = 60.0, seed: int = 1,
               behaviour: Behaviour = Behaviour(), max_changes: int | None = None,
               changes_per_transaction: int = 5, progress_every: float = 10.0) -> Stats:
    """Play `day` (00:00-24:00 Moscow time) with timestamps of the simulated clock, `speedup`
    times faster than real time (math.inf: as fast as possible). Arrivals follow each region's
    local curve; lifecycle steps due after the day's end are left for a later run."""
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}")
    origin = datetime.combine(day, dtime(0), MOSCOW).timestamp()
    end = origin + 86400
    stats = Stats()
    with psycopg.connect(dsn, application_name="hrdv-replay", autocommit=True) as conn:
        sim = _prepare(conn, behaviour, random.Random(seed), origin, backdated=True)
        arrivals = ArrivalProcess(sim, behaviour)
        sim.schedule(arrivals.next_after(origin), "arrival", 0)
        pace = Pace(max_changes=max_changes)  # the simulated clock sets the rate
        while sim.next_due() < end and not pace.done(stats.changes):
            _follow_clock(pace, sim.next_due() - origin, speedup)
            _replay_transaction(conn, sim, arrivals, stats, end, changes_per_transaction)
            if pace.report_due(progress_every):
                _progress(stats, sim, pace, "replay")
        _sync_identities(conn)
        _progress(stats, sim, pace, "replay, done")
    return stats


def _follow_clock(pace: Pace, simulated_s: float, speedup: float) -> None:
    """Wait until real time, `speedup` times slower, catches up with the simulated clock."""
    ahead = simulated_s / speedup - pace.elapsed()
    if ahead > 0:
        time.sleep(min(ahead, 1.0))


def _replay_transaction(conn: psycopg.Connection, sim: Simulator, arrivals: "ArrivalProcess",
                        stats: Stats, end: float, batch: int) -> None:
    with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
        _notice_migration(conn, sim, stats)
        target = stats.changes + batch
        while stats.changes < target and sim.next_due() < end:
            if sim.reference_due():  # at the next event's instant: the CRM's busy hours
                _apply(cur, sim.reference_change(sim.next_due()), stats)
            if sim.heap[0][2] == "arrival":
                t = heapq.heappop(sim.heap)[0]
                _apply(cur, sim.arrival(t), stats)
                sim.schedule(arrivals.next_after(t), "arrival", 0)
            else:
                _apply(cur, sim.pop_event(), stats)
    stats.transactions += 1


class ArrivalProcess:
    """New interactions of a day as a non-homogeneous Poisson process, by thinning: candidates
    at the peak intensity, each kept with probability intensity(t) / peak.

    A region's daily mean is customers x contacts_per_customer_day x its weekday weight; within
    the day it follows the hourly curve in the region's local time."""

    def __init__(self, sim: Simulator, b: Behaviour) -> None:
        self.sim, self.b = sim, b
        mean_hourly = sum(b.hourly_weights) / 24
        self.scale = b.contacts_per_customer_day / mean_hourly / 86400
        customers = sum(n for n, _ in sim.crm.regions.values())
        peak = max(b.hourly_weights) * max(b.weekday_weights) * max(b.incident_multiplier, 1)
        self.peak = customers * self.scale * peak

    def next_after(self, t: float) -> float:
        while True:
            t += self.sim.rng.expovariate(self.peak)
            self.sim.roll_incidents(t)
            rate = sum(self.sim.region_weights(t).values()) * self.scale
            if self.sim.rng.random() * self.peak < rate:
                return t

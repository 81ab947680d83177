"""How the CRM's users behave: a pure, seeded model the live and replay drivers follow.

Nothing here touches a database or a clock. Every decision takes the caller's `random.Random`, so
one seeded RNG drives a whole run and the same seed gives the same decisions. Times are seconds
(durations) or timezone-aware datetimes (instants); curves are evaluated in each region's LOCAL
time, because a customer in Kamchatka (UTC+12) calls at 11:00 in Kamchatka, not in Moscow.

The lifecycles are planned up front: when an interaction (or work order, or claim) is created, the
model draws its whole future as a list of `Step`s (delay after the previous step, action). The
driver schedules the next step after applying one. Planning up front keeps the model testable
(a plan is plain data) and the driver small.

Defaults are plausible for a national B2C operator's contact centre; each is a parameter of
`Behaviour` and documented there.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from hrdv.crm import reference

# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------

# The mixes and curves the bulk loader's history follows too (hrdv/crm/reference.py), so that live
# and replayed data continue the history instead of changing its shape. Curves are per LOCAL hour
# 0..23 (peak late morning, a second plateau after work) and per weekday Monday..Sunday.
HOURLY_WEIGHTS: tuple[float, ...] = tuple(reference.HOUR_WEIGHTS)
WEEKDAY_WEIGHTS: tuple[float, ...] = tuple(reference.WEEKDAY_WEIGHTS)


# Kinds of reference change (hrdv.crm.reference_changes) and their default weights: per 1 000
# reference changes, about 180 sign-ups, 200 tariff changes ... and one service area moving to
# another branch. Real CRMs change their territories and queues a few times a month at most;
# these rates are higher so that the pipeline's validity histories are exercised every hour.
REFERENCE_CHANGE_MIX: dict[str, float] = {
    "customer_signup": 0.18, "customer_tariff": 0.20, "customer_status": 0.14,
    "customer_segment": 0.03, "customer_move": 0.03,
    "contact_consent": 0.185, "contact_primary": 0.05, "contact_delete": 0.04,
    "operator_hire": 0.03, "engineer_hire": 0.015, "operator_move": 0.06, "engineer_move": 0.03,
    "queue_change": 0.004, "branch_rename": 0.002, "area_rename": 0.003, "area_move": 0.001,
}
REFERENCE_CHANGE_KINDS: tuple[str, ...] = tuple(REFERENCE_CHANGE_MIX)


@dataclass(frozen=True)
class Behaviour:
    """Every behavioural knob of the generator, with its default. Shares are probabilities.

    Curves and mixes
      hourly_weights          contacts per LOCAL hour 0..23 (relative); default peak 11:00.
      weekday_weights         Monday..Sunday multipliers (relative).
      channel_mix             channel code -> share of new interactions (reference.CHANNEL_MIX).
      topic_mix               leaf topic code -> share (reference.TOPIC_MIX); leaves the CRM
                              has but the mix lacks are never drawn.
      channel_detail_mix      channel -> sub-channel -> share; written once migration 001 added
                              interactions.channel_detail.
      contacts_per_customer_day  mean new interactions per customer per day (replay volume).

    Handling (log-normal: a median in seconds and a sigma of the underlying normal)
      first_response_median_s channel -> median wait until the first response (before queueing).
      first_response_sigma
      handling_median_s       channel -> median talk/handle time of a first-contact resolution.
      handling_sigma
      resolution_median_s     median time to close a case not resolved at first contact.
      resolution_sigma
      fcr_share               share resolved on first contact.
      interaction_sla_hours   channel -> hours until an interaction's SLA deadline.
      sla_breach_share        share of cases that get stuck and close after their SLA deadline
                              (1.2x to 3x the SLA), on top of breaches the draws produce anyway.

    Operators
      shift_hours             shift -> (start, end) local hours (employees.shift: day, evening,
                              night); an operator works in their region's local time.
      contacts_per_operator_hour  what one operator on shift handles per hour.
      max_queue_factor        cap on how much an overloaded queue stretches first responses.

    Operators' working states (operator_states: logged_in, ready, busy, after_call_work, break,
    logged_out; one open interval per operator, each change closes it and opens the next)
      desk_channels           channels an operator handles live at the desk, in a state; web
                              forms and e-mail are worked from a back-office list without one.
      acd_share               share of desk contacts the ACD routes to a logged-in operator of
                              the queue's skill group: a READY one first, else one in after-call
                              work or busy (who switches to the new contact). Such an assignment
                              makes the operator busy with the contact, the end of its handling
                              (the first response, or the closing when it is resolved at once)
                              starts after-call work, and after-call work ends in ready, a break
                              or logging out. The other contacts are assigned from a backlog
                              (callbacks, queued chats) without a state change. The main knob of
                              the volume (each state change writes 2 rows: the close of the open
                              interval and the next one). Measured: a default live stream at 20
                              changes/s on a CRM of 20 operators, two hours from 08:00 Moscow
                              time: 19 % of all row changes are operator_states (acd_share 0.5:
                              13 %, 0.7: 21 %). 0: only shifts and breaks, a few per operator
                              and day.
      after_call_work_median_s, after_call_work_sigma   after-call work (log-normal).
      login_ready_median_s    from logging in to ready.
      login_spread_s          operators log in up to this long before their shift starts (or,
                              when the generator first sees them on shift, within this long);
      logout_spread_s         and log out up to this long after it ends, once the contact in
                              hand is done (employees.shift and shift_hours, in their region's
                              local time).
      break_every_median_s    time between breaks (log-normal, sigma 0.4); a break due while
                              busy is taken after the contact's after-call work.
      break_median_s          length of a break (log-normal, sigma 0.4).
      Every *_s above is compressed by scaled() like the lifecycles; shift_hours are not, so a
      short test sees logins and logouts by starting its clock near a shift boundary.

    Repeat contacts (same customer, same topic) as disjoint buckets of a repeat's age:
      repeat_24h_share        previous contact 0..24 h ago
      repeat_7d_share         previous contact 24 h..7 d ago
      repeat_30d_share        previous contact 7..30 d ago
      (cumulative: within 24 h = repeat_24h_share; within 7 d = 24h + 7d; within 30 d = all three)

    Abandoned contacts (status abandoned, interactions.abandoned_at)
      abandon_share           channel -> share of new contacts whose customer leaves the queue
                              before any operator answers; such a contact is never assigned,
                              answered or closed. Default: 6 % of calls, 3 % of chats; none
                              for the other channels (web forms, e-mail and messenger messages
                              wait in a list with nobody on the line; office visitors are
                              counted at the desk). Independent of the queue's load (a
                              simplification: real abandonment grows with the wait).
      abandon_median_s        channel -> median time in the queue before hanging up (log-normal,
                              abandon_sigma), for the abandons that are not short ones.
      abandon_sigma
      short_abandon_share     share of abandons within short_abandon_s of creation, uniformly
                              (misdials, IVR hang-ups: the "short abandons" some KPI
                              definitions exclude); the others last at least that long.
      short_abandon_s         the short-abandon threshold (5 s).

    Transfers (interactions.transfer_count, queue_code)
      transfer_share          channel -> share of answered contacts the operator transfers to
                              another queue of the same channel, some time after the answer and
                              before the closing (a channel with a single queue cannot transfer:
                              web, e-mail and office have one each). Default 8 % of calls, chats
                              and messenger contacts.
      second_transfer_share   share of transferred contacts transferred once more.
      transfer_median_s       median time from the answer (or the previous transfer) to the
                              transfer (log-normal, sigma 0.8, at most half of what remains
                              until the closing: transfers do not move the closing).

    Lifecycle events of interactions
      reopen_share            closed interactions the customer reopens (reopen_count + 1).
      reopen_median_s         median delay from closing to reopening.
      correction_share        closed interactions corrected later (backdated: topic re-classified,
                              closed_at moved earlier) — what the back office does.
      correction_median_s     median delay from closing to the correction.
      test_record_share       interactions created by testers and hard-deleted afterwards.
      test_record_lifetime_median_s

    Work orders (задания) and claims (претензии)
      work_order_share        top-level topic -> share of interactions that spawn a work order.
      work_order_priority_mix priority ("1" most urgent .. "4") -> share;
      work_order_sla_hours    priority -> hours until the SLA deadline.
      work_order_types        top-level topic -> work order type.
      work_order_assign_median_s, work_order_start_median_s, work_order_done_median_s, _sigma
      reassign_share          work orders handed to another engineer (each may happen twice).
      postpone_share          work orders postponed (customer not at home, parts missing).
      postpone_median_s       how long a postponement lasts.
      cancel_share            work orders cancelled (problem went away, duplicate).
      claim_share             closed interactions followed by a formal claim.
      claim_after_breach_share  the same for interactions that breached their SLA.
      claim_delay_median_s    median delay from closing to the claim.
      claim_review_median_s, claim_decision_median_s
      claim_outcome_mix       outcome -> share; 'no_grounds' ends as status rejected, the others
                              as resolved.
      claim_categories        what a claim is about: 'outage', 'breach', 'billing', 'other'
                              (the interaction's situation) -> claims.category.
      claim_amount_median_rub, claim_amount_sigma
      claim_deadline_days     regulatory deadline to answer a claim (60 days: Federal Law
                              "On Communications", art. 55).

    Incidents (regional outages)
      incidents_per_day       country-wide mean outages per day (Poisson).
      incident_duration_median_s, incident_duration_sigma
      incident_multiplier     the region's contact intensity during the outage (x normal).
      incident_topics         topic codes an outage is about (the first that exists is used).
      incident_work_order_share  share of outage interactions that spawn a work order.
      incident_tail_s         how long after the outage repeats and claims stay elevated.
      incident_repeat_boost   repeat shares are multiplied by this in the tail.
      incident_claim_share    claim share of outage interactions.

    Reference entities (customers, contact persons, employees, queues, branches, service areas)
      reference_change_share  probability that a step of the simulation is a change of a
                              reference entity (live: instead of the next lifecycle step or
                              arrival; replay: at the instant of the next event, besides it).
                              0.01: about 1.3 % of all row changes (a sign-up writes 2-3 rows),
                              so 1 000 changes/s carry 10-15 reference changes/s.
      reference_change_mix    kind -> relative weight (REFERENCE_CHANGE_KINDS lists the kinds):
                              sign-ups, tariff/status/segment changes and consents dominate;
                              queues, branches and service areas change rarely.
      customer_segment_mix    segment -> share, for sign-ups and segment changes (B2C, VIP, SOHO).
      second_contact_share    sign-ups that register a second contact person (family member).
      customer_close_share    status changes of an active customer that close the account at
                              once instead of suspending it.
      suspended_pick_share    status changes that settle a suspended customer (when there is
                              one) rather than touch an active one. Above
                              (1 - it) x (1 - customer_close_share), so suspensions do not pile up.
      resume_share            settled suspensions that end active again (else closed).
      email_share             contact persons with an e-mail address.
      operator_move_mix       what an operator's move changes: skill_group, site, shift.
      queue_skill_group_share queue changes that re-assign the skill group (else routing_rule).
    """

    hourly_weights: tuple[float, ...] = HOURLY_WEIGHTS
    weekday_weights: tuple[float, ...] = WEEKDAY_WEIGHTS
    channel_mix: dict[str, float] = field(default_factory=lambda: dict(reference.CHANNEL_MIX))
    topic_mix: dict[str, float] = field(default_factory=lambda: dict(reference.TOPIC_MIX))
    channel_detail_mix: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "call": {"ivr": 0.7, "callback": 0.2, "direct_line": 0.1},
        "chat": {"site": 0.55, "mobile_app": 0.45},
        "messenger": {"telegram": 0.5, "whatsapp": 0.3, "vk": 0.2},
        "web": {"site_form": 0.7, "mobile_app_form": 0.3},
        "email": {"support_mailbox": 1.0},
        "office": {"walk_in": 0.8, "appointment": 0.2}})
    contacts_per_customer_day: float = 0.01

    first_response_median_s: dict[str, float] = field(default_factory=lambda: {
        "call": 45, "chat": 90, "messenger": 300, "web": 7200, "email": 14400, "office": 300})
    first_response_sigma: float = 0.9
    handling_median_s: dict[str, float] = field(default_factory=lambda: {
        "call": 330, "chat": 600, "messenger": 540, "web": 900, "email": 1200, "office": 900})
    handling_sigma: float = 0.6
    resolution_median_s: float = 6 * 3600
    resolution_sigma: float = 1.1
    fcr_share: float = 0.72
    interaction_sla_hours: dict[str, float] = field(default_factory=lambda: {
        "call": 2, "chat": 2, "messenger": 4, "web": 24, "email": 24, "office": 24})
    sla_breach_share: float = 0.05

    shift_hours: dict[str, tuple[int, int]] = field(default_factory=lambda: {
        "day": (8, 16), "evening": (16, 24), "night": (0, 8)})
    contacts_per_operator_hour: float = 6.0
    max_queue_factor: float = 8.0

    desk_channels: tuple[str, ...] = ("call", "chat", "messenger", "office")
    acd_share: float = 0.6
    after_call_work_median_s: float = 45.0
    after_call_work_sigma: float = 0.6
    login_ready_median_s: float = 90.0
    login_spread_s: float = 900.0
    logout_spread_s: float = 900.0
    break_every_median_s: float = 2 * 3600.0
    break_median_s: float = 600.0

    abandon_share: dict[str, float] = field(default_factory=lambda: {"call": 0.06, "chat": 0.03})
    abandon_median_s: dict[str, float] = field(default_factory=lambda: {"call": 40, "chat": 75})
    abandon_sigma: float = 0.9
    short_abandon_share: float = 0.15
    short_abandon_s: float = 5.0

    transfer_share: dict[str, float] = field(default_factory=lambda: {
        "call": 0.08, "chat": 0.08, "messenger": 0.08})
    second_transfer_share: float = 0.15
    transfer_median_s: float = 120.0

    repeat_24h_share: float = 0.07
    repeat_7d_share: float = 0.06
    repeat_30d_share: float = 0.04

    reopen_share: float = 0.04
    reopen_median_s: float = 18 * 3600
    correction_share: float = 0.01
    correction_median_s: float = 2 * 3600
    test_record_share: float = 0.003
    test_record_lifetime_median_s: float = 600

    work_order_share: dict[str, float] = field(default_factory=lambda: {
        "internet": 0.25, "tv": 0.18, "equipment": 0.35, "moving": 0.60, "mobile": 0.03})
    work_order_priority_mix: dict[str, float] = field(default_factory=lambda: {
        "1": 0.05, "2": 0.15, "3": 0.60, "4": 0.20})
    work_order_sla_hours: dict[str, float] = field(default_factory=lambda: {
        "1": 4, "2": 8, "3": 24, "4": 72})
    work_order_types: dict[str, str] = field(default_factory=lambda: {
        "internet": "repair", "tv": "repair", "equipment": "equipment_replacement",
        "moving": "installation", "mobile": "line_check"})
    work_order_assign_median_s: float = 1800
    work_order_start_median_s: float = 4 * 3600
    work_order_done_median_s: float = 5400
    work_order_sigma: float = 0.9
    reassign_share: float = 0.15
    postpone_share: float = 0.10
    postpone_median_s: float = 20 * 3600
    cancel_share: float = 0.06

    claim_share: float = 0.006
    claim_after_breach_share: float = 0.04
    claim_delay_median_s: float = 2 * 86400
    claim_review_median_s: float = 86400
    claim_decision_median_s: float = 10 * 86400
    claim_outcome_mix: dict[str, float] = field(default_factory=lambda: {
        "compensation": 0.35, "recalculation": 0.20, "explanation": 0.15, "no_grounds": 0.30})
    claim_categories: dict[str, str] = field(default_factory=lambda: {
        "outage": "outage_compensation", "breach": "service_quality",
        "billing": "billing_error", "other": "service_quality"})
    claim_amount_median_rub: float = 1500.0
    claim_amount_sigma: float = 1.0
    claim_deadline_days: float = 60

    incidents_per_day: float = 1.5
    incident_duration_median_s: float = 3 * 3600
    incident_duration_sigma: float = 0.5
    incident_multiplier: float = 6.0
    incident_topics: tuple[str, ...] = ("internet.no_link", "internet.no_internet", "tv.no_signal",
                                        "internet", "tv")
    incident_work_order_share: float = 0.5
    incident_tail_s: float = 3 * 86400
    incident_repeat_boost: float = 2.5
    incident_claim_share: float = 0.05

    reference_change_share: float = 0.01
    reference_change_mix: dict[str, float] = field(default_factory=lambda: dict(REFERENCE_CHANGE_MIX))
    customer_segment_mix: dict[str, float] = field(default_factory=lambda: {
        "B2C": 0.90, "VIP": 0.06, "SOHO": 0.04})
    second_contact_share: float = 0.4
    customer_close_share: float = 0.15
    suspended_pick_share: float = 0.5
    resume_share: float = 0.75
    email_share: float = 0.7
    operator_move_mix: dict[str, float] = field(default_factory=lambda: {
        "skill_group": 0.35, "site": 0.25, "shift": 0.40})
    queue_skill_group_share: float = 0.5

    def __post_init__(self) -> None:
        if len(self.hourly_weights) != 24 or len(self.weekday_weights) != 7:
            raise ValueError("hourly_weights needs 24 values and weekday_weights 7")
        repeats = self.repeat_24h_share + self.repeat_7d_share + self.repeat_30d_share
        if repeats * self.incident_repeat_boost > 1:
            raise ValueError("repeat shares (times incident_repeat_boost) must stay below 1")
        if not 0 <= self.acd_share <= 1:
            raise ValueError(f"acd_share must be within 0..1, got {self.acd_share}")
        if not self.channel_mix or min(self.channel_mix.values()) < 0:
            raise ValueError("channel_mix needs at least one channel and no negative share")
        shares = [*self.abandon_share.values(), *self.transfer_share.values(),
                  self.short_abandon_share, self.second_transfer_share]
        if not all(0 <= share <= 1 for share in shares):
            raise ValueError("abandon and transfer shares must be within 0..1")
        if set(self.abandon_share) - set(self.abandon_median_s):
            raise ValueError("abandon_median_s needs a median for every channel of abandon_share")
        unknown = set(self.reference_change_mix) - set(REFERENCE_CHANGE_KINDS)
        if unknown or not 0 <= self.reference_change_share <= 1:
            raise ValueError(f"reference changes: unknown kinds {sorted(unknown)} or a share "
                             "outside 0..1")

    @property
    def peak_local_hour(self) -> int:
        return max(range(24), key=lambda hour: self.hourly_weights[hour])


# ------------------------------------------------------------------------------------------------
# Small draws
# ------------------------------------------------------------------------------------------------

def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    """A log-normal draw given its median (= exp(mu)); handling times are long-tailed."""
    return median * math.exp(sigma * rng.gauss(0.0, 1.0))


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    """One key by weight. Sorted keys: the draw must not depend on dict construction order."""
    keys = sorted(weights)
    return rng.choices(keys, [weights[key] for key in keys])[0]


def local_time(at: datetime, utc_offset_hours: float) -> datetime:
    return at.astimezone(timezone(timedelta(hours=utc_offset_hours)))


def intensity(b: Behaviour, at: datetime, utc_offset_hours: float) -> float:
    """Relative contact intensity of a region at instant `at`, from its local hour and weekday.

    Linear between hour centres, so the curve has no 1-hour steps in replay."""
    local = local_time(at, utc_offset_hours)
    position = local.hour + local.minute / 60 + local.second / 3600 - 0.5
    low = math.floor(position)
    frac = position - low
    hourly = (1 - frac) * b.hourly_weights[low % 24] + frac * b.hourly_weights[(low + 1) % 24]
    return hourly * b.weekday_weights[local.weekday()]


def topic_weights(b: Behaviour, leaves: list[str]) -> dict[str, float]:
    """The mix restricted to the leaves the CRM has; uniform if the mix names none of them."""
    weights = {code: b.topic_mix[code] for code in leaves if b.topic_mix.get(code, 0) > 0}
    return weights or {code: 1.0 for code in leaves}


def scaled(b: Behaviour, factor: float) -> Behaviour:
    """The same behaviour with every duration, deadline and incident gap times `factor`.

    scaled(b, 1/60) lives an hour of lifecycle per minute: tests and demos see closings,
    reopenings, work orders and claims within seconds. Curves stay in wall-clock hours."""
    changes: dict[str, object] = {}
    for name, value in vars(b).items():
        if not name.endswith(("_s", "_hours", "_days")) or name == "shift_hours":
            continue
        if isinstance(value, dict):
            changes[name] = {key: v * factor for key, v in value.items()}
        else:
            changes[name] = value * factor
    changes["incidents_per_day"] = b.incidents_per_day / factor
    return replace(b, **changes)


# ------------------------------------------------------------------------------------------------
# Repeat contacts
# ------------------------------------------------------------------------------------------------

REPEAT_WINDOWS: dict[str, tuple[float, float]] = {
    "24h": (0.0, 86400.0),
    "7d": (86400.0, 7 * 86400.0),
    "30d": (7 * 86400.0, 30 * 86400.0),
}


def repeat_bucket(b: Behaviour, rng: random.Random, boost: float = 1.0) -> str | None:
    """Whether a new interaction repeats an earlier one, and how old that one is (a bucket)."""
    roll = rng.random()
    for bucket, share in (("24h", b.repeat_24h_share), ("7d", b.repeat_7d_share),
                          ("30d", b.repeat_30d_share)):
        if roll < share * boost:
            return bucket
        roll -= share * boost
    return None


# ------------------------------------------------------------------------------------------------
# Operators and queueing
# ------------------------------------------------------------------------------------------------

def on_shift(b: Behaviour, shift: str, local_hour: int) -> bool:
    """Whether an operator of `shift` works at this local hour (unknown shifts: always)."""
    start, end = b.shift_hours.get(shift, (0, 24))
    return start <= local_hour < end


def shift_window(b: Behaviour, shift: str, utc_offset_hours: float, t: float) -> tuple[float, float]:
    """(start, end), epoch seconds, of the operator's shift under way at epoch second t, or else
    of the next one (unknown shifts: the whole local day)."""
    start_h, end_h = b.shift_hours.get(shift, (0, 24))
    offset = utc_offset_hours * 3600
    midnight = math.floor((t + offset) / 86400) * 86400 - offset  # local midnight, as epoch s
    for day in (0, 1):
        start = midnight + day * 86400 + start_h * 3600
        end = midnight + day * 86400 + end_h * 3600
        if t < end:
            return start, end
    raise AssertionError("unreachable: tomorrow's shift ends after t")


def queue_factor(b: Behaviour, arrivals_per_hour: float, operators_on_shift: float) -> float:
    """How much a queue stretches first-response times: 1/(1-utilisation), as in an M/M/1 queue,
    capped, because past capacity the real queue grows until customers give up."""
    capacity = operators_on_shift * b.contacts_per_operator_hour
    if capacity <= 0:
        return b.max_queue_factor
    utilisation = arrivals_per_hour / capacity
    if utilisation >= 1:
        return b.max_queue_factor
    return min(b.max_queue_factor, 1 / (1 - utilisation))


# ------------------------------------------------------------------------------------------------
# Lifecycle plans
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    delay_s: float   # after the previous step (or after creation for the first)
    action: str


@dataclass(frozen=True)
class InteractionPlan:
    steps: tuple[Step, ...]
    sla_s: float
    resolved_first_contact: bool
    work_order: bool
    claim: bool
    test_record: bool
    breaches_sla: bool
    abandoned: bool = False   # the customer leaves the queue: one step, "abandon"
    transfers: int = 0        # "transfer" steps between the first response and closing


def abandon_delay(b: Behaviour, rng: random.Random, channel: str) -> float:
    """Seconds a customer waits in the queue before hanging up: a short abandon (under
    short_abandon_s) with short_abandon_share, else log-normal and at least that long."""
    if rng.random() < b.short_abandon_share:
        return b.short_abandon_s * rng.uniform(0.1, 1.0)
    return max(b.short_abandon_s, lognormal(rng, b.abandon_median_s[channel], b.abandon_sigma))


def _transfers(b: Behaviour, rng: random.Random, channel: str, close_s: float) -> tuple[list[Step], float]:
    """The transfer steps of an answered contact and what remains of `close_s` (the time from
    the first response to closing) after them: transfers happen within it, the closing stays."""
    if rng.random() >= b.transfer_share.get(channel, 0.0):
        return [], close_s
    steps, left = [], close_s
    for _ in range(2 if rng.random() < b.second_transfer_share else 1):
        delay = min(lognormal(rng, b.transfer_median_s, 0.8), left / 2)
        steps.append(Step(delay, "transfer"))
        left -= delay
    return steps, left


def _close_after_response(b: Behaviour, rng: random.Random, channel: str, fcr: bool,
                          sla_s: float, elapsed_s: float) -> tuple[float, bool]:
    """Seconds from first response to closing, and whether that closing breaches the SLA."""
    if rng.random() < b.sla_breach_share:
        target = sla_s * rng.uniform(1.2, 3.0)  # a stuck case
        return max(target - elapsed_s, 1.0), True
    if fcr:
        close = lognormal(rng, b.handling_median_s[channel], b.handling_sigma)
    else:
        close = lognormal(rng, b.resolution_median_s, b.resolution_sigma)
    return close, elapsed_s + close > sla_s


def plan_interaction(b: Behaviour, rng: random.Random, channel: str, topic: str,
                     queue_factor_now: float = 1.0, incident: bool = False,
                     may_abandon: bool = True) -> InteractionPlan:
    """The whole life of a new interaction: assign, respond, close, and what may follow.

    Actions: assign, respond, transfer (once or twice, to another queue), close, reopen, respond
    (again), close, correct, delete (test records: created, then deleted without a close),
    plus the flags telling the driver to spawn a work order at the first response and a claim
    after the (last) closing. An abandoned contact (abandon_share of its channel, unless not
    `may_abandon`: one already assigned) has the single action abandon."""
    sla_s = b.interaction_sla_hours[channel] * 3600
    if rng.random() < b.test_record_share:
        life = lognormal(rng, b.test_record_lifetime_median_s, 0.5)
        return InteractionPlan((Step(life * 0.3, "assign"), Step(life * 0.7, "delete")),
                               sla_s, False, False, False, True, False)
    if may_abandon and rng.random() < b.abandon_share.get(channel, 0.0):
        return InteractionPlan((Step(abandon_delay(b, rng, channel), "abandon"),),
                               sla_s, False, False, False, False, False, abandoned=True)
    wait = lognormal(rng, b.first_response_median_s[channel], b.first_response_sigma) * queue_factor_now
    assign = wait * rng.uniform(0.05, 0.5)  # routing happens before the operator answers
    fcr = rng.random() < b.fcr_share
    close, breach = _close_after_response(b, rng, channel, fcr, sla_s, wait)
    transfers, close = _transfers(b, rng, channel, close)
    steps = [Step(assign, "assign"), Step(wait - assign, "respond"), *transfers, Step(close, "close")]
    if rng.random() < b.reopen_share:
        steps += [Step(lognormal(rng, b.reopen_median_s, 1.0), "reopen"),
                  Step(lognormal(rng, b.first_response_median_s[channel], 0.8), "respond"),
                  Step(lognormal(rng, b.resolution_median_s, b.resolution_sigma), "close")]
    if rng.random() < b.correction_share:
        steps.append(Step(lognormal(rng, b.correction_median_s, 1.0), "correct"))
    top = topic.split(".")[0]
    wo_share = b.incident_work_order_share if incident else b.work_order_share.get(top, 0.0)
    claim_share = b.claim_after_breach_share if breach else b.claim_share
    if incident:
        claim_share = max(claim_share, b.incident_claim_share)
    return InteractionPlan(tuple(steps), sla_s, fcr, rng.random() < wo_share,
                           rng.random() < claim_share, False, breach, transfers=len(transfers))


@dataclass(frozen=True)
class WorkOrderPlan:
    priority: str
    sla_s: float
    steps: tuple[Step, ...]   # assign, reassign, start, postpone, start, done | cancel


def plan_work_order(b: Behaviour, rng: random.Random) -> WorkOrderPlan:
    """A work order's life: assigned to an engineer, maybe handed over, started, maybe
    postponed (then started again), done; or cancelled at some point instead."""
    priority = pick(rng, b.work_order_priority_mix)
    sla_s = b.work_order_sla_hours[priority] * 3600
    sigma = b.work_order_sigma
    # High priority moves faster: its SLA is tighter, so the engineers' dispatch is too.
    speed = sla_s / (24 * 3600)
    steps = [Step(lognormal(rng, b.work_order_assign_median_s * speed, sigma), "assign")]
    if rng.random() < b.reassign_share:
        steps.append(Step(lognormal(rng, 3600 * speed, sigma), "reassign"))
        if rng.random() < b.reassign_share:
            steps.append(Step(lognormal(rng, 3600 * speed, sigma), "reassign"))
    steps.append(Step(lognormal(rng, b.work_order_start_median_s * speed, sigma), "start"))
    if rng.random() < b.postpone_share:
        steps += [Step(lognormal(rng, 1800, sigma), "postpone"),
                  Step(lognormal(rng, b.postpone_median_s, 0.6), "start")]
    if rng.random() < b.cancel_share:
        at = rng.randint(1, len(steps))  # cancelled after some of the steps already happened
        steps = steps[:at] + [Step(lognormal(rng, 3600, sigma), "cancel")]
    else:
        steps.append(Step(lognormal(rng, b.work_order_done_median_s, sigma), "done"))
    return WorkOrderPlan(priority, sla_s, tuple(steps))


@dataclass(frozen=True)
class ClaimPlan:
    amount_rub: float
    deadline_s: float
    outcome: str
    steps: tuple[Step, ...]   # review, decide


def plan_claim(b: Behaviour, rng: random.Random) -> ClaimPlan:
    amount = round(lognormal(rng, b.claim_amount_median_rub, b.claim_amount_sigma), 2)
    steps = (Step(lognormal(rng, b.claim_review_median_s, 0.7), "review"),
             Step(lognormal(rng, b.claim_decision_median_s, 0.6), "decide"))
    return ClaimPlan(amount, b.claim_deadline_days * 86400.0, pick(rng, b.claim_outcome_mix), steps)


def claim_delay(b: Behaviour, rng: random.Random) -> float:
    return lognormal(rng, b.claim_delay_median_s, 0.8)


# ------------------------------------------------------------------------------------------------
# Incidents
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Incident:
    region: str
    topic: str
    start: datetime
    end: datetime

    def active(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def in_tail(self, b: Behaviour, at: datetime) -> bool:
        return self.end <= at < self.end + timedelta(seconds=b.incident_tail_s)


def next_incident_gap(b: Behaviour, rng: random.Random) -> float:
    """Seconds until the next outage somewhere (Poisson process); inf when disabled."""
    if b.incidents_per_day <= 0:
        return math.inf
    return rng.expovariate(b.incidents_per_day / 86400)


def draw_incident(b: Behaviour, rng: random.Random, at: datetime, regions: dict[str, float],
                  topics: list[str]) -> Incident:
    """An outage starting at `at` in a region picked by its weight (bigger regions, more
    equipment, more outages), on the first configured incident topic the CRM knows."""
    region = pick(rng, regions)
    topic = next((code for code in b.incident_topics if code in topics), None)
    if topic is None:  # a configured top level stands for any of its leaves
        tops = {code.split(".")[0] for code in b.incident_topics}
        candidates = sorted(code for code in topics if code.split(".")[0] in tops) or sorted(topics)
        topic = rng.choice(candidates)
    duration = lognormal(rng, b.incident_duration_median_s, b.incident_duration_sigma)
    return Incident(region, topic, at, at + timedelta(seconds=duration))


def region_weights(b: Behaviour, at: datetime, regions: dict[str, tuple[float, float]],
                   incidents: list[Incident]) -> dict[str, float]:
    """Weight of each region for the next new interaction at `at`.

    regions: code -> (customers, utc_offset). A region's weight is its customers times its local
    intensity, times the outage multiplier while one is active there."""
    weights = {}
    for code, (customers, offset) in regions.items():
        weight = customers * intensity(b, at, offset)
        if any(i.region == code and i.active(at) for i in incidents):
            weight *= b.incident_multiplier
        weights[code] = weight
    return weights


def incident_topic_share(b: Behaviour) -> float:
    """During an outage, the share of the region's interactions that are about the outage: the
    excess over normal traffic, (m - 1) / m."""
    return (b.incident_multiplier - 1) / b.incident_multiplier if b.incident_multiplier > 1 else 0.0


def expected_changes_per_interaction(b: Behaviour) -> float:
    """Mean row changes one new interaction causes (its own, its work order's, its claim's);
    used to tell how many arrivals a given rate of changes means."""
    mix = sum(b.channel_mix.values())
    abandoned = sum(w * b.abandon_share.get(c, 0.0) for c, w in b.channel_mix.items()) / mix
    transfers = sum(w * b.transfer_share.get(c, 0.0) for c, w in b.channel_mix.items()) / mix
    answered = (4 + b.reopen_share * 3 + b.correction_share
                + transfers * (1 + b.second_transfer_share))
    work_orders = sum(share * b.work_order_share.get(code.split(".")[0], 0.0)
                      for code, share in b.topic_mix.items()) / sum(b.topic_mix.values())
    work_order = 4 + b.reassign_share * 1.15 + b.postpone_share * 2
    return (abandoned * 2
            + (1 - abandoned) * (answered + work_orders * work_order + b.claim_share * 3))

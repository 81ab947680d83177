"""The behaviour model alone (hrdv.crm.behaviour): pure functions, no database, no clock."""
from __future__ import annotations

import random
import statistics
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from hrdv.crm import behaviour as bh
from hrdv.crm.behaviour import Behaviour

B = Behaviour()
UTC = timezone.utc


def test_defaults_are_valid_and_peak_late_morning() -> None:
    assert len(B.hourly_weights) == 24 and len(B.weekday_weights) == 7
    assert 10 <= B.peak_local_hour <= 12
    assert abs(sum(B.channel_mix.values()) - 1) < 1e-9
    with pytest.raises(ValueError):
        Behaviour(hourly_weights=(1.0,) * 23)
    with pytest.raises(ValueError):
        Behaviour(repeat_24h_share=0.5, repeat_7d_share=0.3)


def test_intensity_follows_local_time() -> None:
    at = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)  # Wednesday: 11:30 in Moscow, 20:30 in Kamchatka
    assert bh.intensity(B, at, 3) == pytest.approx(B.hourly_weights[11] * B.weekday_weights[2])
    # The same local hour an hour later in a region one hour further west: same intensity.
    assert bh.intensity(B, at, 7) == pytest.approx(bh.intensity(B, at + timedelta(hours=1), 6))
    night = datetime(2026, 11, 25, 0, 30, tzinfo=UTC)  # 03:30 in Moscow, 12:30 in Kamchatka
    assert bh.intensity(B, night, 12) > 10 * bh.intensity(B, night, 3)


def test_weekend_is_quieter() -> None:
    wednesday = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    sunday = wednesday + timedelta(days=4)
    assert bh.intensity(B, sunday, 3) < bh.intensity(B, wednesday, 3)


def test_lognormal_has_the_given_median_and_a_long_tail() -> None:
    rng = random.Random(1)
    draws = [bh.lognormal(rng, 300, 0.8) for _ in range(20001)]
    assert statistics.median(draws) == pytest.approx(300, rel=0.04)
    assert statistics.mean(draws) > 1.2 * statistics.median(draws)


def test_pick_is_independent_of_dict_order() -> None:
    forward = {"a": 1.0, "b": 2.0, "c": 3.0}
    backward = dict(reversed(list(forward.items())))
    first = [bh.pick(random.Random(5), forward) for _ in range(50)]
    assert first == [bh.pick(random.Random(5), backward) for _ in range(50)]


def test_repeat_buckets_match_their_shares() -> None:
    rng = random.Random(2)
    n = 200_000
    counts = Counter(bh.repeat_bucket(B, rng) for _ in range(n))
    assert counts["24h"] / n == pytest.approx(B.repeat_24h_share, abs=0.004)
    assert counts["7d"] / n == pytest.approx(B.repeat_7d_share, abs=0.004)
    assert counts["30d"] / n == pytest.approx(B.repeat_30d_share, abs=0.004)
    boosted = Counter(bh.repeat_bucket(B, rng, B.incident_repeat_boost) for _ in range(n))
    assert boosted["24h"] / n == pytest.approx(B.repeat_24h_share * B.incident_repeat_boost, abs=0.006)


def _plans(n: int, **kwargs) -> list[bh.InteractionPlan]:
    rng = random.Random(3)
    return [bh.plan_interaction(B, rng, rng.choice(sorted(B.channel_mix)), "internet.no_link", **kwargs)
            for _ in range(n)]


def test_interaction_plans_keep_the_lifecycle_order() -> None:
    for plan in _plans(5000):
        actions = [step.action for step in plan.steps]
        assert all(step.delay_s > 0 for step in plan.steps)
        if plan.test_record:
            assert actions == ["assign", "delete"]
            continue
        if plan.abandoned:  # nothing else ever happens to it: no operator, answer, closing, claim
            assert actions == ["abandon"] and not (plan.work_order or plan.claim or plan.transfers)
            continue
        transfers = actions.count("transfer")
        assert transfers == plan.transfers <= 2
        assert actions[:3 + transfers] == ["assign", "respond", *["transfer"] * transfers, "close"]
        if "reopen" in actions:
            at = actions.index("reopen")
            assert actions[at:at + 3] == ["reopen", "respond", "close"]
        assert actions.count("correct") <= 1 and actions[-1] in ("close", "correct")


def test_interaction_plan_shares() -> None:
    plans = [p for p in _plans(20000) if not p.test_record and not p.abandoned]
    n = len(plans)
    assert sum(p.resolved_first_contact for p in plans) / n == pytest.approx(B.fcr_share, abs=0.015)
    reopened = sum(any(s.action == "reopen" for s in p.steps) for p in plans) / n
    assert reopened == pytest.approx(B.reopen_share, abs=0.006)
    assert sum(p.work_order for p in plans) / n == pytest.approx(B.work_order_share["internet"], abs=0.015)
    assert sum(p.breaches_sla for p in plans) / n >= B.sla_breach_share * 0.9


def test_overloaded_queue_stretches_first_responses() -> None:
    calm = [p.steps[0].delay_s + p.steps[1].delay_s for p in _plans(3000)
            if not p.test_record and not p.abandoned]
    busy = [p.steps[0].delay_s + p.steps[1].delay_s
            for p in _plans(3000, queue_factor_now=5.0) if not p.test_record and not p.abandoned]
    assert statistics.median(busy) == pytest.approx(5 * statistics.median(calm), rel=0.15)


def test_incident_interactions_spawn_more_work_orders_and_claims() -> None:
    plans = [p for p in _plans(10000, incident=True) if not p.test_record and not p.abandoned]
    n = len(plans)
    assert sum(p.work_order for p in plans) / n == pytest.approx(B.incident_work_order_share, abs=0.02)
    assert sum(p.claim for p in plans) / n >= B.incident_claim_share * 0.85


def _channel_plans(channel: str, n: int, b: Behaviour = B, **kwargs) -> list[bh.InteractionPlan]:
    rng = random.Random(8)
    return [p for p in (bh.plan_interaction(b, rng, channel, "billing.invoice", **kwargs) for _ in range(n))
            if not p.test_record]


def test_abandoned_contacts_by_channel() -> None:
    """About 6 % of calls and 3 % of chats are abandoned, no other channel's contacts."""
    assert B.abandon_share == {"call": 0.06, "chat": 0.03}
    for channel in sorted(B.channel_mix):
        plans = _channel_plans(channel, 40_000)
        share = sum(p.abandoned for p in plans) / len(plans)
        assert share == pytest.approx(B.abandon_share.get(channel, 0.0), abs=0.004), channel
    assert not any(p.abandoned for p in _channel_plans("call", 5000, may_abandon=False))


def test_abandon_delays_are_seconds_to_minutes_some_short() -> None:
    delays = [p.steps[0].delay_s for p in _channel_plans("call", 60_000) if p.abandoned]
    assert len(delays) > 3000 and min(delays) > 0
    short = sum(d < B.short_abandon_s for d in delays) / len(delays)
    assert short == pytest.approx(B.short_abandon_share, abs=0.02)  # the "short abandons"
    longer = [d for d in delays if d >= B.short_abandon_s]
    assert statistics.median(longer) == pytest.approx(B.abandon_median_s["call"], rel=0.1)
    assert sum(d <= 600 for d in delays) / len(delays) > 0.98  # a few minutes at most, mostly
    chat = [p.steps[0].delay_s for p in _channel_plans("chat", 60_000) if p.abandoned]
    assert statistics.median(chat) > statistics.median(delays)  # chatters wait longer
    with pytest.raises(ValueError):
        Behaviour(abandon_share={"call": 1.5})
    with pytest.raises(ValueError):
        Behaviour(abandon_share={"web": 0.1})  # no median for the channel


def test_transfers_of_answered_contacts() -> None:
    """About 8 % of answered calls, chats and messenger contacts are transferred, some twice;
    never a contact of a channel with one queue; the closing does not move."""
    for channel in sorted(B.channel_mix):
        plans = [p for p in _channel_plans(channel, 40_000) if not p.abandoned]
        share = sum(p.transfers > 0 for p in plans) / len(plans)
        assert share == pytest.approx(B.transfer_share.get(channel, 0.0), abs=0.005), channel
    plans = [p for p in _channel_plans("call", 100_000) if p.transfers]
    twice = sum(p.transfers == 2 for p in plans) / len(plans)
    assert twice == pytest.approx(B.second_transfer_share, abs=0.03)
    # Same draws without transfers: the same closing instant (transfers take time out of it).
    without = Behaviour(transfer_share={})
    for seed in range(300):
        a = bh.plan_interaction(B, random.Random(seed), "call", "billing.invoice")
        b = bh.plan_interaction(without, random.Random(seed), "call", "billing.invoice")
        if a.transfers and not a.test_record:
            close = [s.action for s in a.steps].index("close")
            assert sum(s.delay_s for s in a.steps[:close + 1]) == pytest.approx(
                sum(s.delay_s for s in b.steps[:3]))


def test_work_order_plans() -> None:
    rng = random.Random(4)
    plans = [bh.plan_work_order(B, rng) for _ in range(20000)]
    cancelled = 0
    for plan in plans:
        actions = [step.action for step in plan.steps]
        assert actions[0] == "assign" and actions[-1] in ("done", "cancel")
        cancelled += actions[-1] == "cancel"
        if actions[-1] == "done":
            assert "start" in actions and actions[-2] == "start"
        for at, action in enumerate(actions):
            if action == "postpone" and at + 1 < len(actions):
                assert actions[at + 1] in ("start", "cancel")
        assert str(plan.priority) in B.work_order_priority_mix
        assert plan.sla_s == B.work_order_sla_hours[plan.priority] * 3600
    assert cancelled / len(plans) == pytest.approx(B.cancel_share, abs=0.006)
    reassigned = sum(any(s.action == "reassign" for s in p.steps) for p in plans) / len(plans)
    assert reassigned == pytest.approx(B.reassign_share * (1 - B.cancel_share / 2), abs=0.02)


def test_claim_plans() -> None:
    rng = random.Random(5)
    plans = [bh.plan_claim(B, rng) for _ in range(5000)]
    assert {p.outcome for p in plans} == set(B.claim_outcome_mix)
    assert all(p.deadline_s == 60 * 86400 and p.amount_rub > 0 for p in plans)
    assert [s.action for s in plans[0].steps] == ["review", "decide"]


def test_queue_factor() -> None:
    assert bh.queue_factor(B, 0, 10) == 1.0
    half = bh.queue_factor(B, 10 * B.contacts_per_operator_hour / 2, 10)
    assert half == pytest.approx(2.0)
    assert bh.queue_factor(B, 1e9, 10) == B.max_queue_factor
    assert bh.queue_factor(B, 5, 0) == B.max_queue_factor


def test_shifts_cover_the_day_once() -> None:
    for hour in range(24):
        assert sum(bh.on_shift(B, shift, hour) for shift in ("day", "evening", "night")) == 1


def test_shift_window_is_in_local_time() -> None:
    at = datetime(2026, 11, 25, 12, 30, tzinfo=UTC).timestamp()  # 15:30 Moscow, 19:30 Novosibirsk
    start, end = bh.shift_window(B, "day", 3, at)  # under way: 08:00-16:00 Moscow
    assert (start, end) == (datetime(2026, 11, 25, 5, tzinfo=UTC).timestamp(),
                            datetime(2026, 11, 25, 13, tzinfo=UTC).timestamp())
    start, end = bh.shift_window(B, "day", 7, at)  # over: tomorrow's
    assert start == datetime(2026, 11, 26, 1, tzinfo=UTC).timestamp() and end - start == 8 * 3600
    start, end = bh.shift_window(B, "evening", 7, at)  # 16:00-24:00 Novosibirsk, under way
    assert start <= at < end == datetime(2026, 11, 25, 17, tzinfo=UTC).timestamp()


def test_incidents() -> None:
    rng = random.Random(6)
    gaps = [bh.next_incident_gap(B, rng) for _ in range(20000)]
    assert statistics.mean(gaps) == pytest.approx(86400 / B.incidents_per_day, rel=0.03)
    at = datetime(2026, 11, 25, 8, tzinfo=UTC)
    incident = bh.draw_incident(B, rng, at, {"RU-MOW": 10.0, "RU-SPE": 5.0},
                                ["billing.invoice", "internet.no_link", "tv.no_signal"])
    assert incident.topic == "internet.no_link" and incident.active(at)
    assert incident.in_tail(B, incident.end + timedelta(hours=1))
    regions = {"RU-MOW": (10.0, 3.0), "RU-SPE": (10.0, 3.0)}
    weights = bh.region_weights(B, at, regions, [bh.Incident("RU-SPE", "internet.no_link", at, at + timedelta(hours=1))])
    assert weights["RU-SPE"] == pytest.approx(B.incident_multiplier * weights["RU-MOW"])
    assert bh.next_incident_gap(Behaviour(incidents_per_day=0), rng) == float("inf")


def test_topic_weights_use_the_crms_leaves() -> None:
    weights = bh.topic_weights(B, ["internet.no_link", "billing.invoice", "unknown.leaf"])
    assert set(weights) == {"internet.no_link", "billing.invoice"}
    assert bh.topic_weights(B, ["a", "b"]) == {"a": 1.0, "b": 1.0}


def test_scaled_compresses_durations_not_curves() -> None:
    fast = bh.scaled(B, 1 / 60)
    assert fast.resolution_median_s == pytest.approx(B.resolution_median_s / 60)
    assert fast.interaction_sla_hours["call"] == pytest.approx(B.interaction_sla_hours["call"] / 60)
    assert fast.claim_deadline_days == pytest.approx(1)
    assert fast.incidents_per_day == pytest.approx(B.incidents_per_day * 60)
    assert fast.hourly_weights == B.hourly_weights and fast.shift_hours == B.shift_hours


def test_changes_per_interaction_is_plausible() -> None:
    assert 4 < bh.expected_changes_per_interaction(B) < 7
    # abandoned contacts change twice (created, abandoned), transfers add one change each
    assert bh.expected_changes_per_interaction(Behaviour(abandon_share={"call": 1.0, "chat": 1.0},
                                                         transfer_share={})) < \
        bh.expected_changes_per_interaction(Behaviour(abandon_share={}, transfer_share={})) < \
        bh.expected_changes_per_interaction(Behaviour(abandon_share={}))


# ------------------------------------------------------------------------------------------------
# Reference changes (hrdv.crm.reference_changes) on a small synthetic CRM, without a database
# ------------------------------------------------------------------------------------------------

def test_reference_change_defaults() -> None:
    assert abs(sum(bh.REFERENCE_CHANGE_MIX.values()) - 1) < 1e-9
    assert set(B.reference_change_mix) == set(bh.REFERENCE_CHANGE_KINDS)
    assert 0 < B.reference_change_share <= 0.05  # a few per cent of the steps
    with pytest.raises(ValueError):
        Behaviour(reference_change_mix={"customer_signup": 1.0, "bogus": 1.0})
    with pytest.raises(ValueError):
        Behaviour(reference_change_share=1.5)


def _synthetic_refs(rng: random.Random, b: Behaviour):
    """Two regions (A: two branches of two areas each, B: one branch), 300 customers with one
    or two contact persons, operators in three skill groups and an office, engineers."""
    from hrdv.crm import live
    from hrdv.crm import reference_changes as rc

    branches = {"A-B1": ("A1", "A"), "A-B2": ("A2", "A"), "B-B1": ("B1", "B")}
    areas = {f"{br}-S{i}": (f"S{i}", br) for br in branches for i in (1, 2)}
    customers = [rc.Customer(i, "A" if i % 3 else "B", "A-B1" if i % 3 else "B-B1", "inet_100",
                             "suspended" if i % 25 == 0 else "active", "B2C") for i in range(1, 301)]
    contacts = {c.id: [rc.Contact(2 * c.id + k, c.id, k == 0, False, False, k == 0)
                       for k in range(1 + c.id % 2)] for c in customers}
    groups = ["call_tech", "call_billing", "call_general", "office_general"]
    employees = [rc.Employee(i, "operator", "Офис" if g.startswith("office") else f"КЦ {i % 2}",
                             g, "A", None, "day") for i, g in enumerate(groups * 3, start=1)]
    employees += [rc.Employee(100 + i, "engineer", None, None, "A" if i % 2 else "B", area, "day")
                  for i, area in enumerate(sorted(areas))]
    state = rc.ReferenceState(customers, contacts, [e for e in employees if e.role == "operator"],
                              [e for e in employees if e.role == "engineer"], {"A": 3.0, "B": 7.0},
                              {"A": "Область А", "B": "Край Б"}, branches, areas,
                              ["inet_100", "inet_500", "tv_basic"],
                              {"q_call_tech": "call", "q_call_billing": "call", "q_call": "call",
                               "q_office": "office"})
    crm = live.Crm(regions={"A": (200.0, 3.0), "B": (100.0, 7.0)},
                   customers={r: [c for c in customers if c.region == r] for r in "AB"},
                   topics={}, channels=set(), queues={"q_call_tech": "call_tech",
                                                      "q_call_billing": "call_billing",
                                                      "q_call": "call_general", "q_office": "office_general"},
                   operators={g: [(e.id, e.shift, 3.0) for e in employees if e.skill_group == g] for g in groups},
                   areas_by_branch={br: sorted(a for a, (_, b2) in areas.items() if b2 == br) for br in branches},
                   areas_by_region={"A": sorted(a for a in areas if a.startswith("A")),
                                    "B": sorted(a for a in areas if a.startswith("B"))},
                   engineers_by_area={e.area: [e.id] for e in employees if e.area},
                   engineers_by_region={r: [e.id for e in employees if e.area and e.region == r] for r in "AB"})
    next_ids = {"customers": 301, "contact_persons": 1000, "employees": 200}

    def new_id(table: str) -> int:
        next_ids[table] += 1
        return next_ids[table] - 1

    return crm, state, rc.ReferenceChanges(crm, state, b, rng, new_id)


def test_reference_changes_follow_their_mix_and_keep_the_crm_sound() -> None:
    from hrdv.crm import live

    rng = random.Random(4)
    crm, state, refs = _synthetic_refs(rng, B)
    steps = 20_000
    due = sum(refs.due() for _ in range(steps))
    assert due / steps == pytest.approx(B.reference_change_share, rel=0.25)
    statements = [st for _ in range(4000) for st in refs.change(None)]
    actions = Counter(live.action_of(text) for text, _ in statements)  # as the driver counts
    assert actions["customers.insert"] == pytest.approx(4000 * 0.18, rel=0.15)
    assert actions["contact_persons.insert"] == pytest.approx(4000 * 0.18 * 1.4, rel=0.15)
    assert set(actions) == {f"{t}.update" for t in live.REFERENCE_TABLES} | {
        "customers.insert", "contact_persons.insert", "contact_persons.delete", "employees.insert"}
    # soundness: one primary contact each; branches keep areas; engineers stay in their region
    assert all(sum(c.primary for c in cs) == 1 for cs in state.contacts.values() if cs)
    assert all(crm.areas_by_branch[b] for b in state.branches)
    for engineer in state.engineers:
        assert state.branches[state.areas[engineer.area][1]][1] == engineer.region
    for customer in state.customers:
        assert customer.branch is None or state.branches[customer.branch][1] == customer.region
    assert all(crm.operators[crm.queues[q]] for q in crm.queues)  # every queue has staff
    # the same seed gives the same statements
    again = _synthetic_refs(random.Random(4), B)[2]
    for _ in range(steps):
        again.due()
    assert [st for _ in range(4000) for st in again.change(None)] == statements

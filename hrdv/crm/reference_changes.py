"""Small changes of the CRM's reference entities, for the live and replay generators.

Customers sign up (with one or two contact persons), change tariff, status (active ->
suspended -> active or closed) and segment, and now and then move to another branch of their
region; contact persons change consents, switch the primary contact or are deleted; operators
are hired and move skill group, site or shift; engineers are hired and move to another service
area of their region; a queue gets another skill group or routing rule; branches and service
areas are renamed, and a service area moves to another branch of its region.

`ReferenceChanges` keeps what it needs of those entities in memory (loaded from the CRM by
`load_state`, then kept up to date by its own changes) and returns SQL statements, like the
`Simulator` it belongs to: every decision takes the simulator's seeded RNG, every choice is made
over id- or code-ordered lists, so the same seed and database give the same changes. It also
updates the simulator's `Crm` snapshot (customers, operators, engineers, areas, queues), so that
later interactions and work orders follow the new state.

Each statement starts `INSERT INTO <table>`, `UPDATE <table>` or `DELETE FROM <table>`: the
driver's Stats count them by that text. Names, phones and e-mails are personal data; they are
generated as the bulk load does, and the pipeline does not capture them.
"""
from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from hrdv.crm import behaviour as bh
from hrdv.crm import reference

if TYPE_CHECKING:
    from hrdv.crm.live import Crm

Statement = tuple[str, dict[str, Any]]
TS = "coalesce(%(ts)s::timestamptz, clock_timestamp())"  # simulated instant, or the CRM's clock
CONTACT_SAMPLE = 50_000  # customers whose contact persons are kept in memory
PICK_TRIES = 8           # random picks before a change that needs a rare case gives up

# --- SQL --------------------------------------------------------------------------------------
INSERT_CUSTOMER = f"""INSERT INTO customers (id, full_name, region_code, segment, registered_at,
    branch_code, tariff_code, status)
    VALUES (%(id)s, %(name)s, %(region)s, %(segment)s, {TS}, %(branch)s, %(tariff)s, 'active')"""
SET_CUSTOMER = {column: f"UPDATE customers SET {column} = %(value)s WHERE id = %(id)s"
                for column in ("tariff_code", "status", "segment", "branch_code")}
INSERT_CONTACT = """INSERT INTO contact_persons (id, customer_id, full_name, phone, email,
    consent_sms, consent_email, is_primary)
    VALUES (%(id)s, %(customer)s, %(name)s, %(phone)s, %(email)s, %(sms)s, %(email_ok)s, %(primary)s)"""
SET_CONSENT = "UPDATE contact_persons SET consent_sms = %(sms)s, consent_email = %(email_ok)s WHERE id = %(id)s"
SET_PRIMARY = "UPDATE contact_persons SET is_primary = %(primary)s WHERE id = %(id)s"
DELETE_CONTACT = "DELETE FROM contact_persons WHERE id = %(id)s"
INSERT_EMPLOYEE = f"""INSERT INTO employees (id, full_name, role, site, skill_group, region_code,
    service_area_code, specialisation, shift, hired_at)
    VALUES (%(id)s, %(name)s, %(role)s, %(site)s, %(skill_group)s, %(region)s, %(area)s,
            %(specialisation)s, %(shift)s, {TS})"""
SET_SKILL_GROUP = "UPDATE employees SET skill_group = %(value)s WHERE id = %(id)s"
SET_SITE = "UPDATE employees SET site = %(site)s, region_code = %(region)s WHERE id = %(id)s"
SET_SHIFT = "UPDATE employees SET shift = %(value)s WHERE id = %(id)s"
SET_AREA = "UPDATE employees SET service_area_code = %(value)s WHERE id = %(id)s"
SET_QUEUE_SKILL_GROUP = "UPDATE queues SET skill_group = %(value)s WHERE code = %(code)s"
SET_ROUTING_RULE = """UPDATE queues SET routing_rule = coalesce(routing_rule, '{}'::jsonb)
    || jsonb_build_object('priority', %(priority)s::int, 'max_wait_s', %(max_wait_s)s::int)
    WHERE code = %(code)s"""
RENAME_BRANCH = "UPDATE branches SET name = %(name)s WHERE code = %(code)s"
RENAME_AREA = "UPDATE service_areas SET name = %(name)s WHERE code = %(code)s"
MOVE_AREA = "UPDATE service_areas SET branch_code = %(branch)s WHERE code = %(code)s"

# --- generated names (personal data: never captured by the pipeline) -----------------------
SURNAMES = ("Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов",
            "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров",
            "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин")
MALE = (("Александр", "Сергей", "Дмитрий", "Андрей", "Алексей", "Максим", "Иван", "Михаил"),
        ("Александрович", "Сергеевич", "Владимирович", "Андреевич", "Игоревич", "Петрович"))
FEMALE = (("Анна", "Мария", "Елена", "Ольга", "Наталья", "Татьяна", "Ирина", "Светлана"),
          ("Александровна", "Сергеевна", "Владимировна", "Андреевна", "Игоревна", "Петровна"))
MAIL_DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "list.ru", "rambler.ru", "inbox.ru")
PLACE_NAMES = ("Центральный", "Северный", "Южный", "Западный", "Восточный", "Заречный",
               "Приморский", "Октябрьский", "Ленинский", "Кировский", "Советский", "Промышленный")
SPECIALISATIONS = ("copper", "equipment", "fiber", "tv")
SHIFT_MIX = {"day": 0.6, "evening": 0.28, "night": 0.12}


def person_name(rng: random.Random, surname: str | None = None) -> str:
    """'Surname Name Patronymic', feminine for about half of the people."""
    surname = surname or rng.choice(SURNAMES)
    female = rng.random() < 0.53
    names, patronymics = FEMALE if female else MALE
    return f"{surname}{'а' if female else ''} {rng.choice(names)} {rng.choice(patronymics)}"


def phone(rng: random.Random) -> str:
    return f"+79{rng.randrange(10 ** 9):09d}"


# --- in-memory state ---------------------------------------------------------------------------
@dataclass(slots=True)
class Customer:
    id: int
    region: str
    branch: str | None
    tariff: str | None
    status: str
    segment: str


@dataclass(slots=True)
class Contact:
    id: int
    customer: int
    primary: bool
    sms: bool
    email_ok: bool
    has_email: bool


@dataclass(slots=True)
class Employee:
    id: int
    role: str
    site: str | None
    skill_group: str | None
    region: str
    area: str | None
    shift: str


@dataclass
class ReferenceState:
    customers: list[Customer]                    # the simulator's sample, by id
    contacts: dict[int, list[Contact]]           # customer id -> contacts (a sample), by id
    operators: list[Employee]
    engineers: list[Employee]
    offsets: dict[str, float]                    # region -> utc offset
    region_names: dict[str, str]
    branches: dict[str, tuple[str, str]]         # code -> (name, region)
    areas: dict[str, tuple[str, str]]            # code -> (name, branch)
    tariffs: list[str]
    queue_channels: dict[str, str]               # queue code -> channel
    suspended: list[Customer] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)  # customer ids in `contacts`, by id

    def __post_init__(self) -> None:
        self.suspended = [c for c in self.customers if c.status == "suspended"]
        self.owners = sorted(self.contacts)

    def branches_of(self, region: str) -> list[str]:
        return sorted(code for code, (_, r) in self.branches.items() if r == region)


def _load_contacts(cur: psycopg.Cursor) -> dict[int, list[Contact]]:
    """Contact persons of an evenly spaced sample of customers (all below CONTACT_SAMPLE)."""
    total = cur.execute("SELECT count(*) FROM customers").fetchone()[0]
    stride = max(1, math.ceil(total / CONTACT_SAMPLE))
    contacts: dict[int, list[Contact]] = {}
    for row in cur.execute("""SELECT id, customer_id, is_primary, consent_sms, consent_email,
            email IS NOT NULL FROM contact_persons WHERE customer_id %% %s = 0 ORDER BY id""", (stride,)):
        contacts.setdefault(row[1], []).append(Contact(*row))
    return contacts


def _load_employees(cur: psycopg.Cursor) -> list[Employee]:
    return [Employee(*row) for row in cur.execute("""SELECT id, role, site, skill_group, region_code,
        service_area_code, shift FROM employees ORDER BY id""")]


def load_state(conn: psycopg.Connection, customers: list[Customer]) -> ReferenceState:
    """What the reference changes need, read from the CRM; `customers` is the simulator's sample."""
    with conn.cursor() as cur:
        employees = _load_employees(cur)
        regions = cur.execute("SELECT code, name, utc_offset FROM regions ORDER BY code").fetchall()
        return ReferenceState(
            customers=sorted(customers, key=lambda c: c.id), contacts=_load_contacts(cur),
            operators=[e for e in employees if e.role == "operator"],
            engineers=[e for e in employees if e.role == "engineer"],
            offsets={code: float(offset) for code, _, offset in regions},
            region_names={code: name for code, name, _ in regions},
            branches={code: (name, region) for code, name, region in cur.execute(
                "SELECT code, name, region_code FROM branches ORDER BY code")},
            areas={code: (name, branch) for code, name, branch in cur.execute(
                "SELECT code, name, branch_code FROM service_areas ORDER BY code")},
            tariffs=[row[0] for row in cur.execute("SELECT code FROM tariffs ORDER BY code")],
            queue_channels=dict(cur.execute("SELECT code, channel_code FROM queues ORDER BY code").fetchall()),
        )


def _insert_sorted(items: list, item: Any, key: Callable[[Any], Any]) -> None:
    if not items or key(items[-1]) < key(item):
        items.append(item)  # the common case: a new (highest) id
    else:
        bisect.insort(items, item, key=key)


def _other(rng: random.Random, choices: list[str], current: str | None) -> str | None:
    """A uniformly chosen element other than `current`; None when there is none."""
    others = [c for c in choices if c != current]
    return rng.choice(others) if others else None


# --- the changes -------------------------------------------------------------------------------
class ReferenceChanges:
    """The reference-entity changes of one simulation (see the module's docstring)."""

    def __init__(self, crm: "Crm", state: ReferenceState, b: bh.Behaviour, rng: random.Random,
                 new_id: Callable[[str], int]) -> None:
        self.crm, self.s, self.b, self.rng, self.new_id = crm, state, b, rng, new_id
        self.mix = {k: w for k, w in b.reference_change_mix.items() if w > 0}
        self.handlers: dict[str, Callable[[datetime | None], list[Statement]]] = {
            kind: getattr(self, f"_{kind}") for kind in bh.REFERENCE_CHANGE_KINDS}

    def due(self) -> bool:
        """Whether this step of the simulation is a reference change (one draw, if enabled)."""
        return bool(self.mix) and self.b.reference_change_share > 0 and (
            self.rng.random() < self.b.reference_change_share)

    def change(self, ts: datetime | None) -> list[Statement]:
        """One reference change of a kind drawn from the mix (its statements; [] if the drawn
        kind found nothing to change, e.g. no customer with two contact persons)."""
        return self.handlers[bh.pick(self.rng, self.mix)](ts)

    # -- customers --
    def _customer(self, usable: Callable[[Customer], bool]) -> Customer | None:
        for _ in range(PICK_TRIES):
            customer = self.rng.choice(self.s.customers)
            if usable(customer):
                return customer
        return None

    def _customer_signup(self, ts: datetime | None) -> list[Statement]:
        region = bh.pick(self.rng, {code: n for code, (n, _) in self.crm.regions.items()})
        branches = self.s.branches_of(region)
        weights = {t: w for t, w in reference.TARIFF_MIX.items() if t in self.s.tariffs}
        tariff = bh.pick(self.rng, weights) if weights else None
        customer = Customer(self.new_id("customers"), region,
                            self.rng.choice(branches) if branches else None, tariff, "active",
                            bh.pick(self.rng, self.b.customer_segment_mix))
        name = person_name(self.rng)
        out = [(INSERT_CUSTOMER, dict(id=customer.id, name=name, region=region, segment=customer.segment,
                                      branch=customer.branch, tariff=tariff, ts=ts))]
        out.append(self._new_contact(customer.id, name, primary=True))
        if self.rng.random() < self.b.second_contact_share:
            out.append(self._new_contact(customer.id, person_name(self.rng, name.split()[0].rstrip("а")),
                                         primary=False))
        self.s.customers.append(customer)
        self.crm.customers.setdefault(region, []).append(customer)
        return out

    def _new_contact(self, customer: int, name: str, primary: bool) -> Statement:
        cid = self.new_id("contact_persons")
        has_email = self.rng.random() < self.b.email_share
        contact = Contact(cid, customer, primary, self.rng.random() < 0.65,
                          has_email and self.rng.random() < 0.45, has_email)
        self.s.contacts.setdefault(customer, []).append(contact)
        if len(self.s.contacts[customer]) == 1:  # a new owner
            _insert_sorted(self.s.owners, customer, key=lambda i: i)
        email = f"client{cid}@{self.rng.choice(MAIL_DOMAINS)}" if has_email else None
        return (INSERT_CONTACT, dict(id=cid, customer=customer, name=name, phone=phone(self.rng),
                                     email=email, sms=contact.sms, email_ok=contact.email_ok,
                                     primary=primary))

    def _customer_tariff(self, ts: datetime | None) -> list[Statement]:
        customer = self._customer(lambda c: c.status != "closed")
        if customer is None:
            return []
        weights = {t: w for t, w in reference.TARIFF_MIX.items()
                   if t in self.s.tariffs and t != customer.tariff}
        if not weights:
            return []
        customer.tariff = bh.pick(self.rng, weights)
        return [(SET_CUSTOMER["tariff_code"], dict(id=customer.id, value=customer.tariff))]

    def _customer_status(self, ts: datetime | None) -> list[Statement]:
        """Settle a suspension (active again, or closed), or suspend (rarely: close) an active
        customer."""
        if self.s.suspended and self.rng.random() < self.b.suspended_pick_share:
            customer = self.s.suspended.pop(self.rng.randrange(len(self.s.suspended)))
            customer.status = "active" if self.rng.random() < self.b.resume_share else "closed"
        else:
            customer = self._customer(lambda c: c.status == "active")
            if customer is None:
                return []
            closes = self.rng.random() < self.b.customer_close_share
            customer.status = "closed" if closes else "suspended"
            if not closes:
                self.s.suspended.append(customer)
        return [(SET_CUSTOMER["status"], dict(id=customer.id, value=customer.status))]

    def _customer_segment(self, ts: datetime | None) -> list[Statement]:
        customer = self._customer(lambda c: c.status != "closed")
        if customer is None:
            return []
        weights = {k: w for k, w in self.b.customer_segment_mix.items() if k != customer.segment}
        if not weights:
            return []
        customer.segment = bh.pick(self.rng, weights)
        return [(SET_CUSTOMER["segment"], dict(id=customer.id, value=customer.segment))]

    def _customer_move(self, ts: datetime | None) -> list[Statement]:
        """To another branch of the same region (regions with one branch have nowhere to go)."""
        customer = self._customer(lambda c: c.status != "closed" and len(self.s.branches_of(c.region)) > 1)
        if customer is None:
            return []
        customer.branch = _other(self.rng, self.s.branches_of(customer.region), customer.branch)
        return [(SET_CUSTOMER["branch_code"], dict(id=customer.id, value=customer.branch))]

    # -- contact persons --
    def _contacts(self, at_least: int) -> list[Contact] | None:
        for _ in range(PICK_TRIES):
            contacts = self.s.contacts[self.rng.choice(self.s.owners)] if self.s.owners else []
            if len(contacts) >= at_least:
                return contacts
        return None

    def _contact_consent(self, ts: datetime | None) -> list[Statement]:
        contacts = self._contacts(1)
        if contacts is None:
            return []
        contact = self.rng.choice(contacts)
        if contact.has_email and self.rng.random() < 0.5:
            contact.email_ok = not contact.email_ok
        else:
            contact.sms = not contact.sms
        return [(SET_CONSENT, dict(id=contact.id, sms=contact.sms, email_ok=contact.email_ok))]

    def _contact_primary(self, ts: datetime | None) -> list[Statement]:
        """Another contact person of the customer becomes the primary one (two rows change)."""
        contacts = self._contacts(2)
        if contacts is None:
            return []
        secondary = [c for c in contacts if not c.primary]
        if not secondary:
            return []
        new, out = self.rng.choice(secondary), []
        for old in (c for c in contacts if c.primary):
            old.primary = False
            out.append((SET_PRIMARY, dict(id=old.id, primary=False)))
        new.primary = True
        return out + [(SET_PRIMARY, dict(id=new.id, primary=True))]

    def _contact_delete(self, ts: datetime | None) -> list[Statement]:
        """A secondary contact person removed (every customer keeps its primary contact)."""
        contacts = self._contacts(2)
        secondary = [c for c in contacts or [] if not c.primary]
        if not secondary:
            return []
        gone = self.rng.choice(secondary)
        contacts.remove(gone)
        return [(DELETE_CONTACT, dict(id=gone.id))]

    # -- employees --
    def _operator_hire(self, ts: datetime | None) -> list[Statement]:
        """A new operator in the skill group and site of a colleague."""
        if not self.s.operators:
            return []
        mate = self.rng.choice(self.s.operators)
        shifts = {k: w for k, w in SHIFT_MIX.items() if k != "night" or not _office(mate)}
        hire = Employee(self.new_id("employees"), "operator", mate.site, mate.skill_group,
                        mate.region, None, bh.pick(self.rng, shifts))
        self.s.operators.append(hire)
        self._place_operator(hire, None)
        return [(INSERT_EMPLOYEE, dict(id=hire.id, name=person_name(self.rng), role="operator",
                                       site=hire.site, skill_group=hire.skill_group, region=hire.region,
                                       area=None, specialisation=None, shift=hire.shift, ts=ts))]

    def _engineer_hire(self, ts: datetime | None) -> list[Statement]:
        if not self.s.areas:
            return []
        area = self.rng.choice(sorted(self.s.areas))
        region = self.s.branches[self.s.areas[area][1]][1]
        hire = Employee(self.new_id("employees"), "engineer", f"Сервисный участок {area}", None,
                        region, area, "day" if self.rng.random() < 0.8 else "evening")
        self.s.engineers.append(hire)
        self.crm.engineers_by_area.setdefault(area, []).append(hire.id)
        self.crm.engineers_by_region.setdefault(region, []).append(hire.id)
        return [(INSERT_EMPLOYEE, dict(id=hire.id, name=person_name(self.rng), role="engineer",
                                       site=hire.site, skill_group=None, region=region, area=area,
                                       specialisation=self.rng.choice(SPECIALISATIONS),
                                       shift=hire.shift, ts=ts))]

    def _operator_move(self, ts: datetime | None) -> list[Statement]:
        """Another skill group (not for office staff: their group is the office), another
        contact-centre site (with its region), or another shift (offices have no night)."""
        if not self.s.operators:
            return []
        operator = self.rng.choice(self.s.operators)
        what = bh.pick(self.rng, self.b.operator_move_mix)
        before = operator.skill_group
        # Never the last operator of a group: the queues it serves would have nobody.
        last = len(self.crm.operators.get(before or "", [])) <= 1
        if what == "skill_group" and not _office(operator) and not last:
            groups = sorted({o.skill_group for o in self.s.operators if o.skill_group and not _office(o)})
            value = _other(self.rng, groups, operator.skill_group)
            if value is not None:
                operator.skill_group = value
                self._place_operator(operator, before)
                return [(SET_SKILL_GROUP, dict(id=operator.id, value=value))]
        if what == "site" and not _office(operator):
            sites = sorted({(o.site, o.region) for o in self.s.operators if o.site and not _office(o)})
            others = [s for s in sites if s != (operator.site, operator.region)]
            if others:
                operator.site, operator.region = self.rng.choice(others)
                self._place_operator(operator, before)
                return [(SET_SITE, dict(id=operator.id, site=operator.site, region=operator.region))]
        shifts = [s for s in sorted(SHIFT_MIX) if s != "night" or not _office(operator)]
        operator.shift = _other(self.rng, shifts, operator.shift) or operator.shift
        self._place_operator(operator, before)
        return [(SET_SHIFT, dict(id=operator.id, value=operator.shift))]

    def _place_operator(self, operator: Employee, old_group: str | None) -> None:
        """Keep crm.operators (skill group -> [(id, shift, utc offset)] by id) in step."""
        if old_group is not None:
            group = self.crm.operators.get(old_group, [])
            group[:] = [o for o in group if o[0] != operator.id]
        entry = (operator.id, operator.shift, self.s.offsets.get(operator.region, 3.0))
        group = self.crm.operators.setdefault(operator.skill_group or "", [])
        group[:] = [o for o in group if o[0] != operator.id]
        _insert_sorted(group, entry, key=lambda o: o[0])

    def _engineer_move(self, ts: datetime | None) -> list[Statement]:
        """To another service area of the engineer's region."""
        if not self.s.engineers:
            return []
        engineer = self.rng.choice(self.s.engineers)
        areas = self.crm.areas_by_region.get(engineer.region, [])
        area = _other(self.rng, areas, engineer.area)
        if area is None:
            return []
        if engineer.area in self.crm.engineers_by_area:
            self.crm.engineers_by_area[engineer.area].remove(engineer.id)
        _insert_sorted(self.crm.engineers_by_area.setdefault(area, []), engineer.id, key=lambda i: i)
        engineer.area = area
        return [(SET_AREA, dict(id=engineer.id, value=area))]

    # -- queues and territories --
    def _queue_change(self, ts: datetime | None) -> list[Statement]:
        """Another skill group of the queue's channel takes the queue, or its routing rule
        gets another priority and maximum wait."""
        code = self.rng.choice(sorted(self.s.queue_channels))
        if self.rng.random() < self.b.queue_skill_group_share:
            channel = self.s.queue_channels[code]
            groups = sorted(g for g, staff in self.crm.operators.items()
                            if staff and g.split("_")[0] == channel)
            value = _other(self.rng, groups, self.crm.queues.get(code))
            if value is not None:
                self.crm.queues[code] = value
                return [(SET_QUEUE_SKILL_GROUP, dict(code=code, value=value))]
        return [(SET_ROUTING_RULE, dict(code=code, priority=self.rng.randint(1, 5),
                                        max_wait_s=self.rng.choice((60, 120, 180, 300, 600))))]

    def _branch_rename(self, ts: datetime | None) -> list[Statement]:
        if not self.s.branches:
            return []
        code = self.rng.choice(sorted(self.s.branches))
        old, region = self.s.branches[code]
        name = f"Филиал «{self.rng.choice(PLACE_NAMES)}» — {self.s.region_names.get(region, region)}"
        if name == old:
            name = f"{name} ({code})"
        self.s.branches[code] = (name, region)
        return [(RENAME_BRANCH, dict(code=code, name=name))]

    def _area_rename(self, ts: datetime | None) -> list[Statement]:
        if not self.s.areas:
            return []
        code = self.rng.choice(sorted(self.s.areas))
        old, branch = self.s.areas[code]
        name = f"Сервисный участок «{self.rng.choice(PLACE_NAMES)}», {self.s.branches[branch][0]}"
        if name == old:
            name = f"{name} ({code})"
        self.s.areas[code] = (name, branch)
        return [(RENAME_AREA, dict(code=code, name=name))]

    def _area_move(self, ts: datetime | None) -> list[Statement]:
        """A service area handed to another branch of its region; never a branch's last one."""
        movable = [code for code, (_, branch) in sorted(self.s.areas.items())
                   if len(self.crm.areas_by_branch.get(branch, [])) > 1
                   and len(self.s.branches_of(self.s.branches[branch][1])) > 1]
        if not movable:
            return []
        code = self.rng.choice(movable)
        name, old = self.s.areas[code]
        new = _other(self.rng, self.s.branches_of(self.s.branches[old][1]), old)
        self.crm.areas_by_branch[old].remove(code)
        _insert_sorted(self.crm.areas_by_branch.setdefault(new, []), code, key=lambda a: a)
        self.s.areas[code] = (name, new)
        return [(MOVE_AREA, dict(code=code, branch=new))]


def _office(operator: Employee) -> bool:
    return (operator.skill_group or "").startswith("office_")

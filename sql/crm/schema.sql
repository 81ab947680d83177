-- CRM source schema (the operator's CRM, as far as the walking skeleton needs it).
-- Debezium captures every table of hrdv/entities.py (ENTITIES) and public.debezium_heartbeat, without
-- the personal-data columns; public.debezium_signal is its signal table.

CREATE TABLE IF NOT EXISTS regions (
    code        text PRIMARY KEY,          -- e.g. 'RU-MOW'
    name        text NOT NULL,
    utc_offset  smallint NOT NULL          -- hours, UTC+2 .. UTC+12
);

CREATE TABLE IF NOT EXISTS channels (
    code text PRIMARY KEY,                 -- call, chat, web
    name text NOT NULL
);

CREATE TABLE IF NOT EXISTS topics (
    code        text PRIMARY KEY,
    name        text NOT NULL,
    parent_code text REFERENCES topics (code)
);

CREATE TABLE IF NOT EXISTS queues (
    code         text PRIMARY KEY,
    name         text NOT NULL,
    channel_code text NOT NULL REFERENCES channels (code)
);

CREATE TABLE IF NOT EXISTS customers (
    id            bigint PRIMARY KEY,
    full_name     text NOT NULL,
    region_code   text NOT NULL REFERENCES regions (code),
    segment       text NOT NULL DEFAULT 'B2C',
    registered_at timestamptz NOT NULL
);

-- Обращения: one row per customer contact, updated through its lifecycle
-- new -> assigned -> in_progress -> closed (or new -> abandoned: see abandoned_at below).
CREATE TABLE IF NOT EXISTS interactions (
    id                        bigint PRIMARY KEY,
    customer_id               bigint NOT NULL REFERENCES customers (id),
    channel_code              text NOT NULL REFERENCES channels (code),
    region_code               text NOT NULL REFERENCES regions (code),
    topic_code                text NOT NULL REFERENCES topics (code),
    queue_code                text NOT NULL REFERENCES queues (code),
    direction                 text NOT NULL DEFAULT 'inbound',
    status                    text NOT NULL DEFAULT 'new',
    operator_id               integer,
    subject                   text,
    created_at                timestamptz NOT NULL,
    first_response_at         timestamptz,
    closed_at                 timestamptz,
    resolved_on_first_contact boolean,
    updated_at                timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_created_at_idx ON interactions (created_at);
CREATE INDEX IF NOT EXISTS interactions_closed_at_idx ON interactions (closed_at);

-- Written by Debezium's heartbeat.action.query. Its change events carry the PostgreSQL commit
-- time of the heartbeat and travel in commit order with the data, which is what the Kafka-lag
-- sensor uses to decide that a window is complete (see sensors/kafka_lag.py).
CREATE TABLE IF NOT EXISTS debezium_heartbeat (
    id integer PRIMARY KEY,
    ts timestamptz NOT NULL
);

-- Debezium's signal table (signal.data.collection): `hrdv up` inserts an `execute-snapshot` row
-- here to have tables newly added to the capture read in full (an incremental snapshot), and
-- Debezium inserts its snapshot-window-open/close watermarks. Debezium requires exactly these three
-- columns, in this order. It is in the publication (Debezium reads signals from the stream) but
-- not in table.include.list (Debezium includes its signal table by itself); its change events go
-- to <prefix>.public.debezium_signal, a topic the ingestor does not subscribe to.
CREATE TABLE IF NOT EXISTS debezium_signal (
    id text PRIMARY KEY,
    type text NOT NULL,
    data text
);

-- ===========================================================================================
-- The CRM domain in full (issue 3). Everything below extends the skeleton without changing
-- an existing column: new columns on old tables are nullable or have a default, so the
-- skeleton's generator and the pipeline's parsing keep working. Every statement is idempotent
-- (IF NOT EXISTS, or a DO block that ignores duplicate_object) because this file runs on every
-- stack start, on top of whatever schema version the database already has.
-- Reference rows (85 regions, channels, the topic tree, queues, tariffs, branches) are in
-- sql/crm/reference_data.sql, applied by hrdv.crm.reference.apply().
-- ===========================================================================================

-- Territories: federal district -> federal subject (regions) -> branch -> service area.
CREATE TABLE IF NOT EXISTS federal_districts (
    code text PRIMARY KEY,                 -- 'CFO', 'SZFO', ...
    name text NOT NULL
);
ALTER TABLE regions ADD COLUMN IF NOT EXISTS
    federal_district_code text REFERENCES federal_districts (code);
-- Rough population (2021 census, thousands): the generators' weight for a region's customers.
ALTER TABLE regions ADD COLUMN IF NOT EXISTS population_thousands integer;

CREATE TABLE IF NOT EXISTS branches (
    code        text PRIMARY KEY,          -- 'RU-MOW-B1'
    name        text NOT NULL,
    region_code text NOT NULL REFERENCES regions (code)
);
CREATE INDEX IF NOT EXISTS branches_region_idx ON branches (region_code);

CREATE TABLE IF NOT EXISTS service_areas (
    code        text PRIMARY KEY,          -- 'RU-MOW-B1-S2'
    name        text NOT NULL,
    branch_code text NOT NULL REFERENCES branches (code)
);
CREATE INDEX IF NOT EXISTS service_areas_branch_idx ON service_areas (branch_code);

-- Queues are skill groups; routing_rule says what they serve, e.g.
-- {"channels": ["call"], "topics": ["internet", "tv", "equipment"]} (parent topic codes).
ALTER TABLE queues ADD COLUMN IF NOT EXISTS skill_group text;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS routing_rule jsonb;

CREATE TABLE IF NOT EXISTS tariffs (
    code              text PRIMARY KEY,
    name              text NOT NULL,
    includes_internet boolean NOT NULL DEFAULT false,
    includes_tv       boolean NOT NULL DEFAULT false,
    includes_mobile   boolean NOT NULL DEFAULT false,
    monthly_fee       numeric(10, 2) NOT NULL CHECK (monthly_fee >= 0)
);

-- Customers: branch, tariff and status (nullable FKs: the skeleton's generator fills neither).
ALTER TABLE customers ADD COLUMN IF NOT EXISTS branch_code text REFERENCES branches (code);
ALTER TABLE customers ADD COLUMN IF NOT EXISTS tariff_code text REFERENCES tariffs (code);
ALTER TABLE customers ADD COLUMN IF NOT EXISTS status text DEFAULT 'active';
DO $$ BEGIN
    ALTER TABLE customers ADD CONSTRAINT customers_status_check
        CHECK (status IN ('active', 'suspended', 'closed'));
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE INDEX IF NOT EXISTS customers_region_idx ON customers (region_code);

CREATE TABLE IF NOT EXISTS contact_persons (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id   bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    full_name     text NOT NULL,
    phone         text,
    email         text,
    consent_sms   boolean NOT NULL DEFAULT false,
    consent_email boolean NOT NULL DEFAULT false,
    is_primary    boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS contact_persons_customer_idx ON contact_persons (customer_id);

-- Employees: operators (skill_group = a queue's skill group, site, shift) and engineers
-- (service area, specialisation). interactions.operator_id points here by convention only.
CREATE TABLE IF NOT EXISTS employees (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    full_name         text NOT NULL,
    role              text NOT NULL CHECK (role IN ('operator', 'engineer')),
    site              text,
    skill_group       text,
    region_code       text NOT NULL REFERENCES regions (code),
    service_area_code text REFERENCES service_areas (code),
    specialisation    text,
    shift             text NOT NULL CHECK (shift IN ('day', 'evening', 'night')),
    hired_at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS employees_role_idx ON employees (role, skill_group);
CREATE INDEX IF NOT EXISTS employees_service_area_idx ON employees (service_area_code);

-- Interactions: repeat contacts, reopenings, SLA. operator_id stays without an FK (the CRM's
-- legacy column); generated data references existing operators all the same.
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS previous_interaction_id bigint
    REFERENCES interactions (id) ON DELETE SET NULL;
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS reopen_count integer NOT NULL DEFAULT 0;
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS sla_due_at timestamptz;
-- Abandoned contacts (for the KPI catalog): a call or chat whose customer left the queue before
-- any operator answered. Terminal status 'abandoned', with abandoned_at the moment they left
-- (after creation; some within seconds, the "short abandons" some vendors exclude), and no
-- operator, first response, closing or first-contact resolution. NULL for every other contact.
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS abandoned_at timestamptz;
-- Transfers: how many times the contact was transferred to another queue (of its channel) after
-- being answered. Rows from before the column read 0 (PostgreSQL's stored default).
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS transfer_count integer NOT NULL DEFAULT 0;
-- NOT VALID: enforced for every new or updated row without scanning (or failing on) rows an
-- older version of the schema let in. A CRM whose constraint predates abandoned_at and
-- transfer_count (its definition names neither) gets it replaced, once, in place.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint
                   WHERE conrelid = 'interactions'::regclass AND conname = 'interactions_lifecycle_check'
                     AND pg_get_constraintdef(oid) LIKE '%abandoned_at%'
                     AND pg_get_constraintdef(oid) LIKE '%transfer_count%') THEN
        ALTER TABLE interactions DROP CONSTRAINT IF EXISTS interactions_lifecycle_check;
        ALTER TABLE interactions ADD CONSTRAINT interactions_lifecycle_check CHECK (
            (first_response_at IS NULL OR first_response_at >= created_at)
            AND (closed_at IS NULL OR closed_at >= created_at)
            AND reopen_count >= 0
            AND transfer_count >= 0
            AND (abandoned_at IS NULL OR abandoned_at > created_at)
            AND (status = 'abandoned') = (abandoned_at IS NOT NULL)
            AND (status <> 'abandoned'
                 OR (operator_id IS NULL AND first_response_at IS NULL AND closed_at IS NULL
                     AND NOT coalesce(resolved_on_first_contact, false)
                     AND transfer_count = 0 AND reopen_count = 0))) NOT VALID;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS interactions_customer_idx ON interactions (customer_id, created_at);
CREATE INDEX IF NOT EXISTS interactions_previous_idx ON interactions (previous_interaction_id)
    WHERE previous_interaction_id IS NOT NULL;
-- The open ones: what a live generator advances (small compared with the history). Abandoned
-- contacts are over, though never closed: the index leaves them out (it replaces
-- interactions_open_idx, which kept them).
CREATE INDEX IF NOT EXISTS interactions_in_flight_idx ON interactions (status)
    WHERE closed_at IS NULL AND abandoned_at IS NULL;
DROP INDEX IF EXISTS interactions_open_idx;

-- Work orders (задания): technical tasks spawned by an interaction. Deleting an interaction
-- (a test record) deletes its work orders: there is no work order without its interaction.
CREATE TABLE IF NOT EXISTS work_orders (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    interaction_id    bigint NOT NULL REFERENCES interactions (id) ON DELETE CASCADE,
    customer_id       bigint NOT NULL REFERENCES customers (id),
    type              text NOT NULL,       -- repair, installation, equipment_replacement, line_check
    priority          smallint NOT NULL CHECK (priority BETWEEN 1 AND 4),   -- 1 = most urgent
    service_area_code text NOT NULL REFERENCES service_areas (code),
    engineer_id       bigint REFERENCES employees (id),
    status            text NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'assigned', 'in_progress', 'postponed', 'done', 'cancelled')),
    sla_due_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    assigned_at       timestamptz,
    completed_at      timestamptz,
    cancelled_at      timestamptz,
    reassign_count    integer NOT NULL DEFAULT 0 CHECK (reassign_count >= 0),
    postpone_count    integer NOT NULL DEFAULT 0 CHECK (postpone_count >= 0),
    updated_at        timestamptz NOT NULL,
    CONSTRAINT work_orders_lifecycle_check CHECK (
        sla_due_at >= created_at
        AND (assigned_at IS NULL OR assigned_at >= created_at)
        AND (completed_at IS NULL OR (assigned_at IS NOT NULL AND completed_at >= assigned_at))
        AND (cancelled_at IS NULL OR cancelled_at >= created_at)
        AND NOT (completed_at IS NOT NULL AND cancelled_at IS NOT NULL)
        AND (status <> 'done' OR completed_at IS NOT NULL)
        AND (status <> 'cancelled' OR cancelled_at IS NOT NULL)
        AND (status NOT IN ('assigned', 'in_progress', 'done') OR engineer_id IS NOT NULL)
        AND updated_at >= created_at)
);
CREATE INDEX IF NOT EXISTS work_orders_interaction_idx ON work_orders (interaction_id);
CREATE INDEX IF NOT EXISTS work_orders_customer_idx ON work_orders (customer_id);
CREATE INDEX IF NOT EXISTS work_orders_engineer_idx ON work_orders (engineer_id);
CREATE INDEX IF NOT EXISTS work_orders_open_idx ON work_orders (status)
    WHERE status NOT IN ('done', 'cancelled');

-- Claims (претензии): formal complaints with a regulatory deadline (60 days for a telecom
-- operator under the Federal Law "On Communications", art. 55).
CREATE TABLE IF NOT EXISTS claims (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id       bigint NOT NULL REFERENCES customers (id),
    interaction_id    bigint REFERENCES interactions (id) ON DELETE SET NULL,
    category          text NOT NULL,  -- billing_error, service_quality, outage_compensation, ...
    amount_claimed    numeric(12, 2) CHECK (amount_claimed >= 0),
    regulatory_due_at timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'registered'
        CHECK (status IN ('registered', 'in_review', 'resolved', 'rejected')),
    outcome           text,           -- compensation, recalculation, explanation, no_grounds
    created_at        timestamptz NOT NULL,
    resolved_at       timestamptz,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT claims_lifecycle_check CHECK (
        regulatory_due_at >= created_at
        AND (resolved_at IS NULL OR resolved_at >= created_at)
        AND ((status IN ('resolved', 'rejected')) = (resolved_at IS NOT NULL))
        AND updated_at >= created_at)
);
CREATE INDEX IF NOT EXISTS claims_customer_idx ON claims (customer_id);
CREATE INDEX IF NOT EXISTS claims_interaction_idx ON claims (interaction_id);
CREATE INDEX IF NOT EXISTS claims_open_idx ON claims (status)
    WHERE status IN ('registered', 'in_review');

-- Operators' working states (issue 12): one row per state interval of an operator (employees
-- with role 'operator'), for occupancy and operator-load KPIs. A state change closes the open
-- interval (ended_at) and opens the next one in the same transaction, at the same instant, so an
-- operator's intervals chain without gaps or overlaps. busy and after_call_work point at the
-- contact being handled. Exactly one open interval per operator once the CRM tracks them.
CREATE TABLE IF NOT EXISTS operator_states (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    employee_id    bigint NOT NULL REFERENCES employees (id),
    state          text NOT NULL CHECK (state IN ('logged_in', 'ready', 'busy', 'after_call_work',
                                                  'break', 'logged_out')),
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz,            -- NULL while current
    interaction_id bigint REFERENCES interactions (id) ON DELETE SET NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT operator_states_interval_check CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX IF NOT EXISTS operator_states_employee_idx ON operator_states (employee_id, started_at);
CREATE INDEX IF NOT EXISTS operator_states_interaction_idx ON operator_states (interaction_id)
    WHERE interaction_id IS NOT NULL;
-- The open states: what a generator resumes from, and "agents logged in now".
CREATE UNIQUE INDEX IF NOT EXISTS operator_states_open_idx ON operator_states (employee_id)
    WHERE ended_at IS NULL;

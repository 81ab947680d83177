-- CRM source schema (the operator's CRM, as far as the walking skeleton needs it).
-- Debezium captures public.interactions and public.debezium_heartbeat; the reference tables give
-- the interactions' codes their meaning and keep the generator's data referentially sound.

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
-- new -> assigned -> in_progress -> closed.
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

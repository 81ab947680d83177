-- What Debezium's login may do in the CRM, and nothing more (run by the CRM's owner).
-- Placeholders are filled by psycopg.sql as quoted identifiers: {debezium} is the role, {tables}
-- the captured tables (stack/debezium-crm.json's table.include.list).
-- The role itself (LOGIN REPLICATION) is created by the superuser.
--
-- The publication is created just before, by the tables' owner (hrdv/stack/postgres.py), and
-- the connector runs with publication.autocreate.mode = disabled: creating a publication needs
-- ownership of its tables, which a capture role should not have.
REVOKE ALL ON DATABASE crm FROM PUBLIC;
GRANT CONNECT ON DATABASE crm TO {debezium};
GRANT USAGE ON SCHEMA public TO {debezium};
-- The snapshot reads the captured tables; streaming needs only the slot.
GRANT SELECT ON {tables} TO {debezium};
-- heartbeat.action.query upserts the one heartbeat row every second.
GRANT INSERT, UPDATE ON public.debezium_heartbeat TO {debezium};

-- What Debezium's login may do in the CRM, and nothing more (run by the CRM's owner).
-- Placeholders are filled by psycopg.sql (hrdv/stack/postgres.py): {debezium} is the role,
-- {tables} the captured tables (hrdv.entities.captured_tables(), the connector's
-- table.include.list), and columns_only: for each of them holding personal data, a REVOKE SELECT on
-- it and a GRANT SELECT (columns) naming every column but the personal ones
-- (hrdv.entities.excluded_columns(), the connector's column.exclude.list).
-- The role itself (LOGIN REPLICATION) is created by the superuser.
--
-- The publication is created just before, by the tables' owner (hrdv/stack/postgres.py), and
-- the connector runs with publication.autocreate.mode = disabled: creating a publication needs
-- ownership of its tables, which a capture role should not have.
REVOKE ALL ON DATABASE crm FROM PUBLIC;
GRANT CONNECT ON DATABASE crm TO {debezium};
GRANT USAGE ON SCHEMA public TO {debezium};
-- The snapshots (initial and incremental) read the captured tables; streaming needs only the slot.
GRANT SELECT ON {tables} TO {debezium};
-- Personal data stays unreadable: on those tables only the other columns. Debezium's snapshot and
-- incremental-snapshot queries name the columns left after column.exclude.list, never `*`.
-- (The REVOKE also clears column grants, so a column no longer granted does not linger.)
{columns_only}
-- heartbeat.action.query upserts the one heartbeat row every second.
GRANT INSERT, UPDATE ON public.debezium_heartbeat TO {debezium};
-- The signal table: Debezium reads it and writes its incremental snapshots' window watermarks
-- (snapshot-window-open/close rows, watermarking strategy insert_insert).
GRANT SELECT, INSERT ON public.debezium_signal TO {debezium};

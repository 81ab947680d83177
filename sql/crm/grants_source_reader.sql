-- What the source reader may do in the CRM: read the captured tables, nothing else (run by the
-- CRM's owner). The drift check compares a sample of staged rows with these tables each window,
-- and `hrdv resync` reads the rows it repairs. Placeholders as in grants.sql: {reader} is the
-- role, {tables} the captured tables; {columns_only} is empty for this login (it needs the rows'
-- system columns, see hrdv/stack/postgres.py).
GRANT CONNECT ON DATABASE crm TO {reader};
GRANT USAGE ON SCHEMA public TO {reader};
GRANT SELECT ON {tables} TO {reader};
{columns_only}

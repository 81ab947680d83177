-- Who may do what in the warehouse database (run by its owner after hrdv_schema.sql).
-- {writer} is the pipeline's login, {reporting} the dashboards' (quoted identifiers, filled by
-- psycopg.sql). Neither may change the schema: DDL stays with the owner, applied at start.
REVOKE ALL ON DATABASE hrdv FROM PUBLIC;

-- The pipeline reads and writes staging and marts; TEMPORARY for the staging upsert's
-- COPY target (a temp table dropped at commit).
GRANT CONNECT, TEMPORARY ON DATABASE hrdv TO {writer};
-- It also copies the open window's changes into provisional (the ingestor, hrdv/provisional.py).
GRANT USAGE ON SCHEMA staging, mart, provisional TO {writer};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA staging, mart, provisional TO {writer};
ALTER DEFAULT PRIVILEGES IN SCHEMA staging, mart, provisional
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer};

-- Dashboards read the marts only.
GRANT CONNECT ON DATABASE hrdv TO {reporting};
GRANT USAGE ON SCHEMA mart TO {reporting};
GRANT SELECT ON ALL TABLES IN SCHEMA mart TO {reporting};
ALTER DEFAULT PRIVILEGES IN SCHEMA mart GRANT SELECT ON TABLES TO {reporting};

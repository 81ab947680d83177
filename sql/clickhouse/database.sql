-- The warehouse's own database. Everything HRDV keeps in ClickHouse (queue, buffer, dead letters,
-- materialized views) lives here so that one DROP DATABASE resets it and nothing collides with
-- other users of a shared server.
CREATE DATABASE IF NOT EXISTS hrdv

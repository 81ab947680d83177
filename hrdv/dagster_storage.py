"""Dagster's PostgreSQL run and event storages, with a small pool of connections.

dagster-postgres opens a new connection for every statement (SQLAlchemy NullPool). Here each
connection costs about 16 ms (a backend forked, SCRAM authentication), and a run that records a
materialisation and check results for each of a day's 96 windows made 2 213 of them: 35 of its
68 s were spent connecting. These subclasses keep a few connections open per process, as
dagster-webserver already does for itself (optimize_for_webserver). Nothing else changes: the
tables, the schema migrations and the configuration are dagster-postgres's own.
"""
from __future__ import annotations

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

# One connection kept per process and thread-safe overflow for the daemon's threads; recycled
# hourly, checked before use so that a restarted PostgreSQL costs one failed ping, not a run.
POOL: dict[str, Any] = {"pool_size": 1, "max_overflow": 8, "pool_recycle": 3600, "pool_pre_ping": True}


def _pooled(storage: Any) -> Any:
    storage._engine = create_pg_engine(  # noqa: SLF001 - the engine dagster-postgres uses
        storage.postgres_url, storage._token_provider, isolation_level="AUTOCOMMIT", **POOL)  # noqa: SLF001
    return storage


def _arguments(inst_data: ConfigurableClassData | None, config_value: dict) -> dict:
    return {"inst_data": inst_data, "postgres_url": pg_url_from_config(config_value),
            "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
            "token_provider": get_token_provider_from_config(config_value)}


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    """PostgresEventLogStorage whose engine keeps its connections."""

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict):
        return _pooled(cls(**_arguments(inst_data, config_value)))


class PooledPostgresRunStorage(PostgresRunStorage):
    """PostgresRunStorage whose engine keeps its connections."""

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict):
        return _pooled(cls(**_arguments(inst_data, config_value)))

"""ClickHouse for Dagster assets: a thin resource over hrdv.clickhouse.session.

Every call opens a short session and closes it: with embedded chDB only one process may hold the
data path, and the ingestor needs it every few hundred milliseconds.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pandas as pd
from clickhouse_connect.driver.client import Client
from dagster import ConfigurableResource
from pydantic import Field

from hrdv import clickhouse


class ClickHouseResource(ConfigurableResource):
    """ClickHouse reached by a DSN: chdb:///path (embedded, locked per process) or http(s)://..."""

    dsn: str = Field(description="chdb:///abs/path for embedded chDB, or http(s)://user:pw@host:port")

    @contextmanager
    def session(self) -> Iterator[Client]:
        """A clickhouse-connect client for a few statements; keep the block short."""
        with clickhouse.session(self.dsn) as client:
            yield client

    def query_df(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a query in its own session and return a DataFrame (server-side {name:Type} binding)."""
        with self.session() as client:
            return client.query_df(sql, parameters=dict(parameters or {}))

    def query_rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple]:
        """Run a query in its own session and return its rows as tuples."""
        with self.session() as client:
            return list(client.query(sql, parameters=dict(parameters or {})).result_rows)

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run one statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE)."""
        with self.session() as client:
            return client.command(sql, parameters=dict(parameters or {}))

    def apply_schema(self, kafka: Mapping[str, str] | None = None) -> list[str]:
        """Create HRDV's ClickHouse objects if missing; see hrdv.clickhouse.apply_schema."""
        return clickhouse.apply_schema(self.dsn, kafka)

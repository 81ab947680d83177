"""PostgreSQL: the operational store and marts (database hrdv) and the CRM source (crm)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from dagster import ConfigurableResource
from pydantic import Field


class PostgresResource(ConfigurableResource):
    """A PostgreSQL database reached by a libpq DSN (postgresql://user:password@host:port/db)."""

    dsn: str = Field(description="libpq connection string of the database")

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection whose work commits on normal exit and rolls back on error.

        Client-side binding (ClientCursor): our .sql files hold several statements, which the
        server-side prepared protocol refuses. Values are still quoted by psycopg, never pasted.
        """
        with psycopg.connect(
            self.dsn, application_name="hrdv-dagster", cursor_factory=psycopg.ClientCursor
        ) as conn:
            yield conn

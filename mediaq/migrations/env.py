"""Alembic environment: runs migrations on mediaq's own connection, under a lock.

A database whose mediaq schema is new gets schema.sql and a stamp at head, in one
transaction; any other gets the revisions after its own, one transaction each.
"""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from mediaq.migrate import apply_schema
from mediaq.queries import queries

URL: str = context.config.attributes["mediaq_url"]
REVISIONS_ONLY: bool = context.config.attributes.get("mediaq_revisions_only", False)
MIGRATION_LOCK = 0x6D65646961  # "media": one migrator at a time


def schema_is_new(connection: Connection) -> bool:
    """Asked under the lock: a migrator that ran meanwhile has filled the schema."""
    row = connection.exec_driver_sql(queries["schema_is_new"]).one()
    return bool(row.is_new)


def build_from_schema_file(connection: Connection) -> None:
    """The whole schema and the version stamp commit together, or neither does."""
    with connection.begin():
        apply_schema(connection)
        context.get_context().stamp(context.script, "head")


def run_migrations_online() -> None:
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(URL),
                           poolclass=NullPool)
    lock = {"key": MIGRATION_LOCK}
    with engine.connect() as connection:
        connection.exec_driver_sql(queries["migration_lock"], lock)
        fresh = not REVISIONS_ONLY and schema_is_new(connection)
        connection.exec_driver_sql(queries["schema_create"])
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema="mediaq",
            transaction_per_migration=True,
        )
        if fresh:
            build_from_schema_file(connection)
        else:
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        connection.exec_driver_sql(queries["migration_unlock"], lock)
        connection.commit()


run_migrations_online()

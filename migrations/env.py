"""Alembic environment: runs migrations on mediaq's own connection, under a lock."""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

URL: str = context.config.attributes["mediaq_url"]
MIGRATION_LOCK = 0x6D65646961  # "media": one migrator at a time


def run_migrations_online() -> None:
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(URL),
                           poolclass=NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        connection.execute(text("CREATE SCHEMA IF NOT EXISTS mediaq"))
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema="mediaq",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()


run_migrations_online()

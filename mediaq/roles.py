"""The PostgreSQL roles for direct SQL use, and the login users that hold them.

``mediaq_submitter`` may only call ``mediaq.submit_job(...)`` and read its own jobs;
``mediaq_reader`` may read every table and view of the schema. ``roles.sql`` creates
and grants them (safe to run again, and to be run again after an upgrade, since
grants on new views do not exist before).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg
from psycopg import sql

from mediaq.queries import SQL_DIR

# What `mediaq db roles --login USER:KIND` grants.
ROLE_KINDS = {"submitter": "mediaq_submitter", "reader": "mediaq_reader"}


@dataclass(frozen=True)
class Login:
    """A login user to create (or update) and the mediaq role it is granted."""

    user: str
    role: str
    password: str | None = None  # None: generate one for a new user, keep an existing one's


@dataclass(frozen=True)
class LoginOutcome:
    login: Login
    created: bool
    # Set only when the password was generated here: it is shown once and never stored.
    generated_password: str | None


def apply_roles(conn: psycopg.Connection[object], logins: list[Login]) -> list[LoginOutcome]:
    """Create the roles (roles.sql), then each login user with its role granted."""
    conn.execute((SQL_DIR / "roles.sql").read_text(encoding="utf-8"))
    return [_apply_login(conn, login) for login in logins]


def _apply_login(conn: psycopg.Connection[object], login: Login) -> LoginOutcome:
    name = sql.Identifier(login.user)
    password = login.password or secrets.token_urlsafe(24)
    # Sent as a SCRAM verifier (as psql's \password does): the password itself never
    # reaches the server or its statement log.
    verifier = sql.Literal(
        conn.pgconn.encrypt_password(password.encode(), login.user.encode()).decode())
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, verifier))
        created = True
    except psycopg.errors.DuplicateObject:
        created = False
        if login.password:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(name, verifier))
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(login.role), name))
    generated = password if created and not login.password else None
    return LoginOutcome(login, created, generated)

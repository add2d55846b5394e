"""API tokens and roles.

A token is 32 random bytes (``mq_`` + URL-safe base64); only its SHA-256 is stored, so
a leaked database does not leak usable tokens, and looking a token up by its hash
leaks nothing useful through timing. Clients send ``Authorization: Bearer <token>``.

CSRF: the API reads credentials from that header only, never from cookies, so a page
on another origin cannot make a browser send an authenticated request (browsers do
not add Authorization headers on their own, and a cross-origin script cannot set one
without a CORS grant, which this server never gives).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mediaq import db
from mediaq.errors import Refused

ROLES = ("viewer", "submitter", "operator", "admin")
"""Each role can do everything the roles before it can; only admin applies workflows."""

bearer = HTTPBearer(auto_error=False, description="A token from `mediaq tokens create`.")


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str | None
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(conn: db.Connection, role: str, name: str | None) -> tuple[str, db.Row]:
    """A new token (returned once, never stored) and its stored row."""
    if role not in ROLES:
        raise Refused(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    token = "mq_" + secrets.token_urlsafe(32)
    row = db.fetch_one(conn, "token_create", {"name": name, "role": role,
                                              "token_hash": hash_token(token),
                                              "prefix": token[:7]})
    assert row is not None
    return token, row


def list_tokens(conn: db.Connection) -> list[db.Row]:
    return db.fetch_all(conn, "tokens_list")


def revoke_token(conn: db.Connection, token_id: int) -> None:
    if db.fetch_one(conn, "token_revoke", {"id": token_id}) is None:
        # one statement: a missing token and a revoked one look alike
        raise Refused(f"token {token_id} does not exist or is already revoked")


def authenticate(conn: db.Connection, token: str) -> Principal | None:
    if not token or len(token) > 200 or not token.isascii():
        return None
    row = db.fetch_one(conn, "token_authenticate", {"token_hash": hash_token(token)})
    if row is None:
        return None
    return Principal(int(row["id"]), row["name"], str(row["role"]))


def get_conn(request: Request) -> Any:
    """One pooled connection in one transaction per request (committed on success).

    Used as ``Depends(get_conn, scope="function")`` (``Conn``): with the default scope
    FastAPI runs the code after ``yield`` once the response is sent, so a client could
    read its own change before it was committed, or be told of a change whose commit
    then failed."""
    pool = request.app.state.pool
    with pool.connection() as conn, conn.transaction():
        yield conn


def require(role: str) -> Callable[..., Principal]:
    """A dependency: 401 without a valid token, 403 when its role is below ``role``."""

    def dependency(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
        conn: db.Connection = Depends(get_conn, scope="function"),  # noqa: B008
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        principal = authenticate(conn, credentials.credentials)
        if principal is None:
            raise HTTPException(401, "invalid or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        if not principal.can(role):
            raise HTTPException(403, f"this needs the {role} role (token has {principal.role})")
        return principal

    return dependency

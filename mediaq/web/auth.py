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

from mediaq import db, rate_limits
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


def admission_pool(request: Request) -> Any:
    """The small pool that authentication and rate limits use, apart from the request's
    own connection (``get_conn``): a request may hold its connection while it waits for
    this one, never the other way round, so the two pools cannot deadlock."""
    return request.app.state.admit_pool


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def admit(request: Request, token: str | None, kind: str = "request") -> Principal | None:
    """Authenticate ``token`` and take from the request's rate-limit buckets (its client
    address; the token; the token's submits when ``kind`` is "submit") in one short
    transaction of its own, committed whatever the request then does. None: no valid
    token. 429 with Retry-After when a bucket is empty."""
    limits: Limits = request.app.state.limits
    # one transaction for both statements (the pool is in autocommit): the token is
    # still checked on every request, so a revoked token is refused at once
    with admission_pool(request).connection() as conn, conn.transaction():
        principal = authenticate(conn, token) if token else None
        wanted = limits.buckets(client_address(request), principal, kind)
        verdict = rate_limits.take(conn, wanted)
    if not verdict.allowed:
        assert verdict.limit is not None
        scope = "address" if (verdict.bucket or "").startswith("addr:") else "token"
        raise HTTPException(
            429, f"too many requests for this {scope}: {verdict.limit.count} per "
                 f"{verdict.limit.seconds:g} s; retry in {verdict.retry_after} s",
            headers={"Retry-After": str(verdict.retry_after)})
    return principal


@dataclass(frozen=True)
class Limits:
    """The rate limits of `mediaq web` (settings ``web.*rate_limit``), by role."""

    requests: dict[str, rate_limits.Rate | None]
    submits: dict[str, rate_limits.Rate | None]
    address: rate_limits.Rate | None

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        web = settings.web
        return cls(rate_limits.parse_role_rates(web.rate_limit),
                   rate_limits.parse_role_rates(web.submit_rate_limit),
                   rate_limits.parse_rate(web.address_rate_limit))

    def buckets(self, address: str, who: Principal | None,
                kind: str) -> dict[str, rate_limits.Rate]:
        wanted: dict[str, rate_limits.Rate | None] = {f"addr:{address}": self.address}
        if who is not None:
            wanted[f"token:{who.token_id}"] = self.requests.get(who.role)
            if kind == "submit":
                wanted[f"submit:{who.token_id}"] = self.submits.get(who.role)
        return {name: rate for name, rate in wanted.items() if rate is not None}


def require(role: str, kind: str = "request") -> Callable[..., Principal]:
    """A dependency: 401 without a valid token, 403 when its role is below ``role``,
    429 past a rate limit (``kind`` "submit": the submit limit too)."""

    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> Principal:
        scheme_ok = credentials is not None and credentials.scheme.lower() == "bearer"
        principal = admit(request, credentials.credentials if credentials and scheme_ok
                          else None, kind)
        if not scheme_ok:
            raise HTTPException(401, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        if principal is None:
            raise HTTPException(401, "invalid or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        if not principal.can(role):
            raise HTTPException(403, f"this needs the {role} role (token has {principal.role})")
        return principal

    return dependency

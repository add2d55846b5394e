"""mediaq web, mediaq tokens."""

from __future__ import annotations

import click

from mediaq import migrate
from mediaq.cli import Env, pass_env
from mediaq.cli.render import show_rows

ROLE_CHOICES = ("admin", "operator", "submitter", "viewer")


@click.command("web")
@click.option("--host", help="Address to listen on  [default: web.host, 127.0.0.1]")
@click.option("--port", type=int, help="Port to listen on  [default: web.port, 8080]")
@pass_env
def web(env: Env, host: str | None, port: int | None) -> None:
    """Serve the HTTP API, the live dashboard and Prometheus /metrics."""
    import uvicorn

    from mediaq.web.app import create_app

    host = host or env.settings.web.host
    port = port or env.settings.web.port
    migrate.require_current_schema(env.url)
    click.echo(f"mediaq web on http://{host}:{port}/", err=True)
    uvicorn.run(create_app(env.settings, env.url), host=host, port=port, log_level="warning",
                access_log=False, server_header=False,
                # open event streams never end on their own: stop waiting for them
                timeout_graceful_shutdown=3)


@click.group("tokens")
def tokens() -> None:
    """API tokens (stored hashed; shown once)."""


@tokens.command("create")
@click.option("--role", type=click.Choice(ROLE_CHOICES), required=True)
@click.option("--name", help="Who or what uses it.")
@pass_env
def tokens_create(env: Env, role: str, name: str | None) -> None:
    """Make a token; prints it once, as the last word of the output."""
    from mediaq.web.auth import create_token

    with env.connect() as conn:
        token, row = create_token(conn, role, name)
    click.echo(f"token {row['id']} ({role}) created; it is shown only now: {token}")


@tokens.command("list")
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON.")
@pass_env
def tokens_list(env: Env, as_json_output: bool) -> None:
    """Every token: id, name, role, prefix, when used or revoked (never the token)."""
    from mediaq.web.auth import list_tokens

    with env.connect() as conn:
        rows = list_tokens(conn)
    show_rows(rows, ["id", "name", "role", "prefix", "created_at", "last_used_at",
                     "revoked_at"], "API tokens", as_json_output=as_json_output)


@tokens.command("revoke")
@click.argument("token_id", type=int)
@pass_env
def tokens_revoke(env: Env, token_id: int) -> None:
    """Revoke a token for good."""
    from mediaq.web.auth import revoke_token

    with env.connect() as conn:
        revoke_token(conn, token_id)
    click.echo(f"token {token_id} revoked")


COMMANDS: list[click.Command] = [web, tokens]

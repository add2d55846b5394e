"""The API commits before it answers.

FastAPI runs the code after a dependency's ``yield`` after the response is sent unless
the dependency is declared with ``scope="function"``; for the per-request transaction
(``mediaq.web.auth.get_conn``) that would let a client read the state before its own
change was committed, or be told of a change whose commit then failed. Seen as a flaky
``cancel`` then read under load.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from mediaq.config import Settings
from mediaq.web import api, catalog
from mediaq.web.app import create_app
from mediaq.web.auth import get_conn


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def test_every_route_commits_its_transaction_before_the_response() -> None:
    app = create_app(Settings(), "postgresql:///unused")  # the pool opens in the lifespan
    routes = [r for r in [*app.routes, *api.router.routes, *catalog.router.routes]
              if isinstance(r, APIRoute)]
    uses = [(route.path, d.scope) for route in routes for d in _dependants(route.dependant)
            if d.call is get_conn]
    assert len({path for path, _ in uses}) >= 10  # the API's routes do use it
    assert [(path, scope) for path, scope in uses if scope != "function"] == []

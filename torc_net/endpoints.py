"""Every HTTP route's endpoint, by route name: what the route table (:mod:`torc_net.routes`)
is answered with, by :mod:`torc_net.fastpath` and by the Quart views alike.

Why its own module: the connection loop answers every API route without Quart, so the table
of endpoints must not import it (Quart is built only when something needs it:
:mod:`torc_net.lazy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import (
    allocations,
    api_access,
    api_dag,
    api_grow,
    api_import,
    api_output,
    api_reads,
    api_resources,
    api_runner,
    api_workflows,
)
from .dispatch import Endpoint
from .openapi import API_VERSION, openapi_document
from .routes import ROUTES
from .service import Call, Service


def all_endpoints(about: Mapping[str, Any]) -> dict[str, Endpoint]:
    """Route name -> endpoint: the service's, plus the few the app answers itself.
    ``about``: what /version says of where the server is (filled in once it listens)."""
    document = openapi_document(ROUTES)

    async def ping(s: Service, c: Call) -> dict[str, Any]:
        return {"status": "ok"}

    async def version(s: Service, c: Call) -> dict[str, Any]:
        return {"version": API_VERSION, "api": "v1", "url": about.get("url"),
                "url_file": about.get("url_file")}

    async def openapi(s: Service, c: Call) -> dict[str, Any]:
        return document

    found: dict[str, Endpoint] = {"ping": ping, "version": version, "openapi": openapi}
    for module in (api_workflows, api_reads, api_runner, allocations, api_import,
                   api_resources, api_dag, api_output, api_grow, api_access):
        found.update(module.ENDPOINTS)
    missing = {r.name for r in ROUTES if not r.websocket} - set(found)
    if missing:  # pragma: no cover - a route without an endpoint is a bug
        raise RuntimeError(f"routes without an endpoint: {sorted(missing)}")
    return found

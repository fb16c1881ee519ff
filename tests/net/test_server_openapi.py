"""The served OpenAPI document matches the app's routes exactly."""

from __future__ import annotations

import re

from conftest import Api

from torc_net.server import Running


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


async def test_openapi_matches_url_map(server: Running, api: Api) -> None:
    doc = await api.ok("GET", "/openapi.json")
    documented = {
        (path, method.upper())
        for path, ops in doc["paths"].items()
        for method in ops
    }
    front = server.admission.app
    lazy = getattr(front, "app", front)  # behind the fast path: the Quart app, built on need
    app = await lazy.get()
    served = set()
    pages = set()
    for rule in app.url_map.iter_rules():  # type: ignore[attr-defined]
        if rule.endpoint == "static":
            continue
        methods = {"GET"} if rule.websocket else (rule.methods or set()) - {"HEAD", "OPTIONS"}
        for method in methods:
            path = _openapi_path(rule.rule)
            (served if path.startswith("/torc-service/v1/") else pages).add((path, method))
    assert served == documented
    # Outside the API: the dashboard's pages and assets (torc_net.dash), nothing else.
    assert pages == {("/", "GET"), ("/login", "GET"), ("/workflows/{workflow_id}", "GET"),
                     ("/dash/static/{name}", "GET"), ("/dash/vendor/plotly.min.js", "GET")}
    assert len(served) >= 30
    assert ("/torc-service/v1/workflows/{workflow_id}/compute_nodes/{compute_node_id}/claim",
            "POST") in served

"""The web dashboard: pages and assets served by the API's own server and port.

Theory of operation
-------------------
The dashboard is plain HTML, CSS and ES modules in ``static/`` (no build step, nothing from a
CDN): ``/`` lists workflows and ``/workflows/<id>`` shows one. The pages hold no data; their
scripts read the API (``/torc-service/v1``) and stay live on its websocket feed. So the
dashboard can show exactly what the API shows the same user, through the same checks — there is
no second data path to secure.

Auth. A page is answered only to whom the API would answer: the page request is authenticated
like any API request (a 401 carries ``WWW-Authenticate``, so a browser asks for credentials and
then sends them with the page's own fetches and websocket), and a workflow page the user may
not see is refused with the API's status. ``/login`` asks for credentials on a server where they
are optional. Assets (``/dash/static/<file>``) are public: they are the same code for everyone
and carry no data. Only the files present at start-up are served (a fixed table: a request can
never name a path). plotly.js comes from the installed ``plotly`` package
(``/dash/vendor/plotly.min.js``), never from the repository or the network.
"""

from __future__ import annotations

import html
import mimetypes
from importlib import resources
from pathlib import Path
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from ..auth import Authenticator
from ..service import Service
from ..validate import ApiError

STATIC_DIR = Path(__file__).with_name("static")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}
#: Pages never cached (they are tiny); assets revalidated on every load (ETag), so an upgraded
#: server is never paired with a stale script.
_NO_CACHE = {"Cache-Control": "no-cache"}
_PAGE_HEADERS = {**_NO_CACHE, "X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": (
                     "default-src 'self'; connect-src 'self' ws: wss:; "
                     "img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                     "script-src 'self' 'unsafe-eval'"),
                 "Referrer-Policy": "same-origin"}


def _plotly_js() -> Path | None:
    """plotly.js as the installed ``plotly`` package ships it (None without the package)."""
    try:
        ref = resources.files("plotly") / "package_data" / "plotly.min.js"
    except ModuleNotFoundError:
        return None
    path = Path(str(ref))
    return path if path.is_file() else None


def _assets() -> dict[str, tuple[Path, str]]:
    """URL name -> (file, content type): the fixed table of what may be served."""
    table = {}
    for path in sorted(STATIC_DIR.iterdir()):
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        if path.is_file() and kind and not path.name.startswith("."):
            table[path.name] = (path, kind)
    return table


def _page(title: str, script: str, data: dict[str, Any]) -> str:
    """A page shell: the stylesheet, the module that fills ``#app``, and its few settings."""
    attrs = " ".join(f'data-{k.replace("_", "-")}="{html.escape(str(v), quote=True)}"'
                     for k, v in data.items())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="/dash/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dash/static/dash.css">
<link rel="stylesheet" href="/dash/static/dag.css">
<script type="module" src="/dash/static/{script}"></script>
</head>
<body>
<header class="top"><a class="brand" href="/">torc-trio</a><span id="crumbs"></span>
<span class="spacer"></span><span id="who"></span><span id="conn" class="conn"></span></header>
<main id="app" {attrs}></main>
<div id="toasts" aria-live="polite"></div>
</body>
</html>
"""


def _html(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text, status=status, content_type="text/html; charset=utf-8",
                    headers={**_PAGE_HEADERS, **(headers or {})})


def _refusal(exc: ApiError) -> Response:
    body = (f"<!doctype html><title>{exc.status} {html.escape(exc.error)}</title>"
            f"<h1>{exc.status} {html.escape(exc.error)}</h1><p>{html.escape(str(exc.detail))}"
            "</p><p><a href=\"/\">All workflows</a></p>")
    return _html(exc.status, body, exc.headers)


def register_dashboard(app: QuartTrio, service: Service, auth: Authenticator) -> None:
    """Add the dashboard's routes to ``app`` (outside the API prefix)."""
    assets = _assets()
    plotly_js = _plotly_js()
    settings = {"api": "/torc-service/v1", "auth_mode": auth.mode,
                "plotly": "/dash/vendor/plotly.min.js" if plotly_js else ""}

    async def who_or_refusal() -> Any:
        try:
            return await auth.authenticate(request.headers.get("Authorization"),
                                           request.remote_addr)
        except ApiError as exc:
            return _refusal(exc)

    async def index() -> Response:
        who = await who_or_refusal()
        if isinstance(who, Response):
            return who
        return _html(200, _page("Workflows · torc-trio", "list.js",
                                {**settings, "user": who.name or ""}))

    async def workflow_page(workflow_id: int) -> Response:
        who = await who_or_refusal()
        if isinstance(who, Response):
            return who
        try:
            wf = service.workflow(workflow_id, who)
        except ApiError as exc:
            return _refusal(exc)
        return _html(200, _page(f"{wf.name} · workflow {wf.id} · torc-trio", "workflow.js",
                                {**settings, "user": who.name or "", "workflow_id": wf.id}))

    async def login() -> Response:
        who = await who_or_refusal()
        if isinstance(who, Response):
            return who
        if auth.enabled and not who.authenticated:
            return _refusal(ApiError(401, "unauthorized", "sign in to see your workflows",
                                     {"WWW-Authenticate": 'Basic realm="torc"'}))
        return Response("", status=303, headers={"Location": "/"})

    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return _html(404, "<!doctype html><title>404</title><h1>Not found</h1>")
        path, kind = found
        return await _file(path, kind)

    async def plotly() -> Response:
        if plotly_js is None:
            return _html(404, "<!doctype html><title>404</title><h1>plotly is not installed</h1>")
        return await _file(plotly_js, "text/javascript; charset=utf-8")

    cache: dict[Path, tuple[str, bytes]] = {}

    async def _file(path: Path, kind: str) -> Response:
        # Read once (plotly.js is 4.5 MB: not on the event loop for every page); the ETag is
        # the file's identity when it was read.
        if path not in cache:
            stat, data = await trio.to_thread.run_sync(lambda: (path.stat(), path.read_bytes()))
            cache[path] = (f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"', data)
        etag, data = cache[path]
        headers = {**_NO_CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
        if request.headers.get("If-None-Match") == etag:
            return Response("", status=304, headers=headers)
        return Response(data, status=200, content_type=kind, headers=headers)

    app.add_url_rule("/", "dash_index", index, methods=["GET"])
    app.add_url_rule("/workflows/<int:workflow_id>", "dash_workflow", workflow_page,
                     methods=["GET"])
    app.add_url_rule("/login", "dash_login", login, methods=["GET"])
    app.add_url_rule("/dash/static/<name>", "dash_asset", asset, methods=["GET"])
    app.add_url_rule("/dash/vendor/plotly.min.js", "dash_plotly", plotly, methods=["GET"])

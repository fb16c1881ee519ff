"""The Quart-Trio application: the HTTP contract of docs/api.md over :class:`Service`.

Theory of operation
-------------------
Routes are data (:data:`ROUTES`, a list of :class:`~torc_net.openapi.Route`); one generic view
per route authenticates, decodes and checks the body, calls the matching ``Service`` method and
encodes the answer. The same list produces the OpenAPI document, so they cannot drift apart.

Errors are always ``{"error", "detail"}`` JSON: :class:`ApiError` (bad input, 401/403/404/409),
core errors by their ``status_hint``, Werkzeug HTTP errors (unknown route 404, 405, 413 for a
body over ``MAX_CONTENT_LENGTH``) and a failed commit (503). Only a bug gives a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from torc_core.errors import SpecError, TorcError

from . import allocations
from .auth import Authenticator
from .openapi import API_PREFIX, API_VERSION, Route, openapi_document
from .service import Service
from .state import Principal
from .store import StoreError
from .validate import ApiError, as_object, bad_request

log = logging.getLogger("torc_net.app")

MAX_BODY_BYTES = 64 * 1024 * 1024

_OBJ = {"type": "object"}
_PAGED = ("offset", "limit")

ROUTES: list[Route] = [
    Route("GET", "/ping", "ping", "Liveness check"),
    Route("GET", "/version", "version", "Server and API version"),
    Route("GET", "/openapi.json", "openapi", "This OpenAPI document"),
    Route("POST", "/workflows", "create_workflow", "Create and initialize a workflow from a spec",
          body={"type": "object", "required": ["spec"],
                "properties": {"spec": _OBJ, "dry_run": {"type": "boolean"}}}, status=201),
    Route("GET", "/workflows", "list_workflows", "List workflows", query=_PAGED),
    Route("GET", "/workflows/<int:workflow_id>", "get_workflow", "One workflow"),
    Route("DELETE", "/workflows/<int:workflow_id>", "delete_workflow", "Delete a workflow"),
    Route("POST", "/workflows/<int:workflow_id>/cancel", "cancel_workflow", "Cancel a workflow"),
    Route("POST", "/workflows/<int:workflow_id>/initialize", "initialize_workflow",
          "Initialize uninitialized jobs"),
    Route("POST", "/workflows/<int:workflow_id>/reinitialize", "reinitialize_workflow",
          "Reset changed and unfinished jobs for a new run",
          body={"type": "object", "properties": {"dry_run": {"type": "boolean"},
                                                 "file_mtimes": _OBJ}}),
    Route("POST", "/workflows/<int:workflow_id>/reset_status", "reset_status",
          "Reset job statuses and initialize again",
          body={"type": "object", "properties": {"failed_only": {"type": "boolean"}}}),
    Route("GET", "/workflows/<int:workflow_id>/status", "workflow_status",
          "Counts per status"),
    Route("GET", "/workflows/<int:workflow_id>/jobs", "list_jobs", "List jobs",
          query=("status", *_PAGED)),
    Route("GET", "/workflows/<int:workflow_id>/jobs/<int:job_id>", "get_job", "One job"),
    Route("POST", "/workflows/<int:workflow_id>/jobs/<int:job_id>/disable", "disable_job",
          "Disable a job"),
    Route("GET", "/workflows/<int:workflow_id>/files", "list_files", "List files", query=_PAGED),
    Route("GET", "/workflows/<int:workflow_id>/files/<int:file_id>", "get_file", "One file"),
    Route("POST", "/workflows/<int:workflow_id>/files/mtimes", "record_mtimes",
          "Record file modification times",
          body={"type": "object", "required": ["mtimes"], "properties": {"mtimes": _OBJ}}),
    Route("GET", "/workflows/<int:workflow_id>/user_data", "list_user_data", "List user data",
          query=_PAGED),
    Route("GET", "/workflows/<int:workflow_id>/user_data/<int:user_data_id>", "get_user_data",
          "One user data item"),
    Route("PUT", "/workflows/<int:workflow_id>/user_data/<int:user_data_id>", "put_user_data",
          "Store user data (marks it changed)",
          body={"type": "object", "required": ["data"], "properties": {"data": {}}}),
    Route("GET", "/workflows/<int:workflow_id>/results", "list_results", "List results",
          query=("status", *_PAGED)),
    Route("GET", "/workflows/<int:workflow_id>/events", "list_events", "List workflow events",
          query=("after", *_PAGED)),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes", "register_compute_node",
          "Register a compute node (runner)", body=_OBJ, status=201),
    Route("GET", "/workflows/<int:workflow_id>/compute_nodes", "list_compute_nodes",
          "List compute nodes", query=_PAGED),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/heartbeat",
          "heartbeat", "Renew a compute node's lease"),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/claim",
          "claim_jobs", "Claim ready jobs", body=_OBJ),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/start",
          "start_jobs", "Report jobs started",
          body={"type": "object", "required": ["job_ids"],
                "properties": {"job_ids": {"type": "array", "items": {"type": "integer"}}}}),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/complete",
          "complete_jobs", "Report job results (idempotent)",
          body={"type": "object", "required": ["results"],
                "properties": {"results": {"type": "array", "items": _OBJ}}}),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/deactivate",
          "deactivate_compute_node", "Release a compute node's jobs"),
    Route("POST", "/workflows/<int:workflow_id>/actions/claim", "claim_actions",
          "Claim the workflow's due actions (each is handed out exactly once)",
          body={"type": "object", "properties": {
              "compute_node_id": {"type": ["integer", "null"]},
              "action_types": {"type": "array", "items": {"type": "string"}},
              "trigger_types": {"type": "array", "items": {"type": "string"}}}}),
    Route("GET", "/workflows/<int:workflow_id>/actions", "list_actions",
          "The workflow's actions, claimed and due"),
    Route("POST", "/workflows/<int:workflow_id>/allocations", "record_allocation",
          "Record a submitted Slurm allocation",
          body={"type": "object", "required": ["slurm_job_id"], "properties": {
              "slurm_job_id": {"type": "string"}, "scheduler": {"type": ["string", "null"]},
              "action_index": {"type": ["integer", "null"]}}}, status=201),
    Route("GET", "/workflows/<int:workflow_id>/allocations", "list_allocations",
          "List the workflow's Slurm allocations", query=_PAGED),
    Route("POST", "/workflows/<int:workflow_id>/allocations/<int:allocation_id>/state",
          "set_allocation_state", "Record an allocation's state (e.g. gone, canceled)",
          body={"type": "object", "required": ["state"],
                "properties": {"state": {"type": "string"}}}),
    Route("GET", "/workflows/<int:workflow_id>/events/ws", "workflow_feed",
          "Websocket feed of one workflow", websocket=True),
    Route("GET", "/events/ws", "feed", "Websocket feed of all visible workflows",
          websocket=True),
]

Handler = Callable[..., Awaitable[tuple[int, Any]]]


#: Responses are plain trees of dicts/lists we built: skip the circular-reference bookkeeping.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _json_bytes(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


def json_response(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_json_bytes(obj), status=status, content_type="application/json",
                    headers=dict(headers or {}))


def error_response(exc: ApiError) -> Response:
    return json_response(exc.status, {"error": exc.error, "detail": exc.detail}, exc.headers)


def _handlers(service: Service) -> dict[str, Handler]:
    """Route name -> ``handler(who, body, args, **path_params) -> (status, json)``."""
    s = service

    async def ok(value: Awaitable[Any]) -> tuple[int, Any]:
        return 200, await value

    async def ping(who: Principal, body: Any, args: Any) -> tuple[int, Any]:
        return 200, {"status": "ok"}

    async def version(who: Principal, body: Any, args: Any) -> tuple[int, Any]:
        return 200, {"version": API_VERSION, "api": "v1"}

    document = openapi_document(ROUTES)

    async def openapi(who: Principal, body: Any, args: Any) -> tuple[int, Any]:
        return 200, document

    async def create_workflow(who: Principal, body: Any, args: Any) -> tuple[int, Any]:
        from torc_core.graph import compile_workflow
        from torc_core.parse import parse_spec

        return await s.create_workflow(who, body, parse_spec, compile_workflow)

    async def list_workflows(who: Principal, body: Any, args: Any) -> tuple[int, Any]:
        from .validate import page_args

        offset, limit = page_args(args, 100)
        return 200, s.list_workflows(who, offset, limit)

    async def get_workflow(who: Principal, body: Any, args: Any, workflow_id: int) \
            -> tuple[int, Any]:
        return 200, s.workflow(workflow_id, who).to_json()

    async def workflow_status(who: Principal, body: Any, args: Any, workflow_id: int) \
            -> tuple[int, Any]:
        return 200, s.workflow(workflow_id, who).status_object()

    def wf(fn: Callable[..., Awaitable[Any]], with_body: bool = False, with_args: bool = False) \
            -> Handler:
        async def handler(who: Principal, body: Any, args: Any, workflow_id: int,
                          **more: int) -> tuple[int, Any]:
            extra: list[Any] = []
            if with_body:
                extra.append(body)
            if with_args:
                extra.append(args)
            return await ok(fn(who, workflow_id, *more.values(), *extra))

        return handler

    async def register(who: Principal, body: Any, args: Any, workflow_id: int) \
            -> tuple[int, Any]:
        return 201, await s.register_compute_node(who, workflow_id, body)

    def created(fn: Callable[..., Awaitable[Any]]) -> Handler:
        async def handler(who: Principal, body: Any, args: Any, workflow_id: int) \
                -> tuple[int, Any]:
            return 201, await fn(who, workflow_id, body)

        return handler

    return {
        "ping": ping,
        "version": version,
        "openapi": openapi,
        "create_workflow": create_workflow,
        "list_workflows": list_workflows,
        "get_workflow": get_workflow,
        "delete_workflow": wf(s.delete_workflow),
        "cancel_workflow": wf(s.cancel),
        "initialize_workflow": wf(s.initialize),
        "reinitialize_workflow": wf(s.reinitialize, with_body=True),
        "reset_status": wf(s.reset_status, with_body=True),
        "workflow_status": workflow_status,
        "list_jobs": wf(s.list_jobs, with_args=True),
        "get_job": wf(s.get_job),
        "disable_job": wf(s.disable_job),
        "list_files": wf(s.list_files, with_args=True),
        "get_file": wf(lambda who, w, f: s.list_files(who, w, {}, f)),
        "record_mtimes": wf(s.record_mtimes, with_body=True),
        "list_user_data": wf(s.list_user_data, with_args=True),
        "get_user_data": wf(lambda who, w, u: s.list_user_data(who, w, {}, u)),
        "put_user_data": wf(s.put_user_data, with_body=True),
        "list_results": wf(s.list_results, with_args=True),
        "list_events": wf(s.list_events, with_args=True),
        "register_compute_node": register,
        "list_compute_nodes": wf(s.list_compute_nodes, with_args=True),
        "heartbeat": wf(s.heartbeat),
        "claim_jobs": wf(s.claim, with_body=True),
        "start_jobs": wf(s.start, with_body=True),
        "complete_jobs": wf(s.complete, with_body=True),
        "deactivate_compute_node": wf(s.deactivate),
        "claim_actions": wf(partial(allocations.claim_actions, s), with_body=True),
        "list_actions": wf(partial(allocations.list_actions, s)),
        "record_allocation": created(partial(allocations.record_allocation, s)),
        "list_allocations": wf(partial(allocations.list_allocations, s), with_args=True),
        "set_allocation_state": wf(partial(allocations.set_allocation_state, s),
                                   with_body=True),
    }


async def _read_body() -> dict[str, Any]:
    raw = await request.get_data(cache=False)
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"malformed JSON: {exc}") from None
    return as_object(value, "body")


def create_app(service: Service, auth: Authenticator) -> QuartTrio:
    """Build the app. ``service`` and ``auth`` are owned (and started) by the caller."""
    app = QuartTrio("torc_net")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = 120
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    handlers = _handlers(service)
    app.extensions["torc_service"] = service

    def make_view(route: Route, handler: Handler) -> Callable[..., Awaitable[Response]]:
        async def view(**params: int) -> Response:
            try:
                who = await auth.authenticate(request.headers.get("Authorization"))
                body = await _read_body() if route.method in ("POST", "PUT") else {}
                status, obj = await handler(who, body, request.args, **params)
            except ApiError as exc:
                return error_response(exc)
            return json_response(status, obj)

        view.__name__ = route.name
        return view

    def make_feed(route: Route) -> Callable[..., Awaitable[Response | None]]:
        async def feed_view(**params: int) -> Response | None:
            try:
                who = await auth.authenticate(websocket.headers.get("Authorization"))
                sub, first = service.subscribe(who, params.get("workflow_id"))
            except ApiError as exc:
                return error_response(exc)
            except TorcError as exc:  # pragma: no cover - defensive
                return error_response(ApiError(exc.status_hint, "error", str(exc)))
            try:
                await websocket.accept()
                for message in first:
                    await websocket.send(json.dumps(message, separators=(",", ":")))
                async for text in sub.receive:
                    if sub.overflowed:
                        break
                    await websocket.send(text)
                if sub.overflowed:
                    with trio.move_on_after(1):
                        await websocket.send('{"type":"overflow"}')
                    await websocket.close(1008, "overflow")
                else:
                    await websocket.close(1000)
            finally:
                service.feed.unsubscribe(sub)
            return None

        feed_view.__name__ = route.name
        return feed_view

    for route in ROUTES:
        rule = API_PREFIX + route.path
        if route.websocket:
            app.add_websocket(rule, route.name, make_feed(route))
        else:
            app.add_url_rule(rule, route.name, make_view(route, handlers[route.name]),
                             methods=[route.method])

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return error_response(exc)

    @app.errorhandler(SpecError)
    async def _spec_error(exc: SpecError) -> Response:
        return json_response(422, {"error": "invalid spec", "detail": list(exc.errors)})

    @app.errorhandler(TorcError)
    async def _torc_error(exc: TorcError) -> Response:
        short = {404: "not found", 409: "conflict", 422: "unprocessable"}.get(
            exc.status_hint, "bad request"
        )
        return json_response(exc.status_hint, {"error": short, "detail": str(exc)})

    @app.errorhandler(StoreError)
    async def _store_error(exc: StoreError) -> Response:
        return json_response(503, {"error": "storage unavailable", "detail": str(exc)},
                             {"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        short = {404: "not found", 405: "method not allowed", 413: "body too large"}.get(
            code, exc.name.lower()
        )
        detail = exc.description or exc.name
        headers = {}
        if code == 413:
            detail = f"request body larger than {MAX_BODY_BYTES} bytes"
            # The unread body is still on the wire: this connection cannot be reused.
            headers["Connection"] = "close"
        return json_response(code, {"error": short, "detail": detail}, headers)

    @app.errorhandler(Exception)
    async def _bug(exc: Exception) -> Response:
        log.error("internal error", exc_info=exc)
        return json_response(500, {"error": "internal error", "detail": type(exc).__name__})

    return app

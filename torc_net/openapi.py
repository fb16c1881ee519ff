"""The OpenAPI 3.1 document, generated from the same route table the app registers.

Why one table: the served routes and the document cannot drift apart. ``torc_net.app`` builds
its Quart rules from :data:`Route` entries and serves :func:`openapi_document` of the same
list; a test compares ``app.url_map`` with the document's paths and methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torc_core.checks import INT64_MAX
from torc_core.status import JobStatus

from .validate import MAX_PAGE

API_PREFIX = "/torc-service/v1"
API_VERSION = "0.1.0"

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP (or websocket) route: ``path`` in Quart syntax relative to the API prefix."""

    method: str
    path: str
    name: str
    summary: str
    body: dict[str, Any] | None = None  # JSON schema of the request body
    response: dict[str, Any] | None = None  # JSON schema of the success response
    query: tuple[str, ...] = ()
    status: int = 200
    #: other success statuses it may answer with, same schema (a dry-run create: 200)
    other_statuses: tuple[int, ...] = ()
    websocket: bool = False
    tags: tuple[str, ...] = field(default=())

    @property
    def openapi_path(self) -> str:
        return API_PREFIX + _PARAM.sub(lambda m: "{" + m.group(2) + "}", self.path)

    @property
    def path_params(self) -> list[str]:
        return [m.group(2) for m in _PARAM.finditer(self.path)]

    @property
    def path_regex(self) -> str:
        """The whole path (API prefix included) as a regular expression, one named group per
        parameter, matching as its converter does: ``int`` ASCII digits, ``string`` anything
        but ``/``."""
        out = [re.escape(API_PREFIX)]
        pos = 0
        for m in _PARAM.finditer(self.path):
            out.append(re.escape(self.path[pos:m.start()]))
            value = "[0-9]+" if m.group(1) == "int" else "[^/]+"
            out.append(f"(?P<{m.group(2)}>{value})")
            pos = m.end()
        out.append(re.escape(self.path[pos:]))
        return "".join(out) + "\\Z"

    @property
    def path_schemas(self) -> dict[str, dict[str, Any]]:
        """Each path parameter's schema, by its converter (:data:`PATH_SCHEMAS`)."""
        return {m.group(2): PATH_SCHEMAS[m.group(1) or "string"]
                for m in _PARAM.finditer(self.path)}


#: What a name may be (a user's, a group's): no control characters (they would break the
#: one-line messages and tables that show it) and, a user's, no ':' (HTTP Basic and htpasswd
#: files end a user name there).
NAME_PATTERN = "^[^\\x00-\\x1f\\x7f]*$"
USER_NAME_PATTERN = "^[^\\x00-\\x1f\\x7f:]*$"
#: A path parameter's schema, by its Quart converter: ``<int:...>`` an id, ``<string:...>``
#: (or none) a user name. The app checks each parameter against it (an id beyond 64 bits is a
#: 404: it exists nowhere; a bad name a 400 naming the parameter).
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
    "string": {"type": "string", "minLength": 1, "maxLength": 128,
               "pattern": USER_NAME_PATTERN,
               "description": "a user name: no ':' and no control characters"},
}


#: GET .../jobs: the orders a job table can be sorted in (Torc's ``sort_by``; ties by id) and
#: the longest ``name_contains`` text.
JOB_SORT_KEYS = ("id", "name", "status", "attempt")
MAX_NAME_CONTAINS = 256

#: The query parameters the routes take, with the types the server checks them against.
QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "offset": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
    "after": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
    "limit": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE},
    "status": {"type": "string", "enum": [s.label for s in JobStatus]},
    "name_contains": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CONTAINS,
                      "description": "jobs whose name contains this text, ignoring case"},
    "sort_by": {"type": "string", "enum": list(JOB_SORT_KEYS), "default": "id",
                "description": "sort key; ties by id (status: by status code)"},
    "reverse_sort": {"type": "boolean", "default": False,
                     "description": "the whole order reversed, ties included"},
    "run_id": {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
    "job_id": {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
    "attempt": {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
    "failed": {"type": "boolean"},
    # torc_net.api_dag.MAX_NODES
    "max_nodes": {"type": "integer", "minimum": 0, "maximum": 5000},
}

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
}


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": r.name,
            "summary": r.summary,
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": schema}
                for p, schema in r.path_schemas.items()
            ]
            + [{"name": q, "in": "query", "required": False, "schema": QUERY_SCHEMAS[q]}
               for q in r.query],
            "responses": {
                **{str(code): {"description": "success", "content": {"application/json": {
                    "schema": r.response or {"type": "object"}}}}
                   for code in (r.status, *r.other_statuses)},
                "default": {"description": "error",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        if r.websocket:
            op["description"] = "Websocket upgrade (GET with Upgrade: websocket); JSON messages."
            op["responses"]["101"] = {"description": "switching protocols"}
        if r.body is not None:
            op["requestBody"] = {
                "required": bool(r.body.get("required")),
                "content": {"application/json": {"schema": r.body}},
            }
        paths.setdefault(r.openapi_path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "torc-trio", "version": API_VERSION},
        # Every path carries the API prefix already (the routes are mounted under it).
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
        "security": [{}, {"basic": []}],
    }

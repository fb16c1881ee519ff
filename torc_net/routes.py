"""The HTTP API as data: every route with its request and response schemas.

Why one table: the app registers these routes, validates every body against these schemas
(:func:`torc_net.validate.compile_schema`) and publishes them as ``/openapi.json``, so the
document, the checks and the routes cannot drift apart; the API fuzz test holds the server's
answers to the response schemas.
"""

from __future__ import annotations

from typing import Any

from torc_core.checks import INT64_MAX, INT64_MIN
from torc_core.status import JobStatus

from .openapi import NAME_PATTERN, PATH_SCHEMAS, Route
from .store.schema import MAX_TAIL_CHARS, RESULT_INFO_NAMES, RESULT_LISTED_NAMES

ALLOCATION_STATES = ("submitted", "pending", "running", "completed", "gone", "canceled")
RESULT_STATUSES = ("completed", "failed", "terminated")

_PAGED = ("offset", "limit")


def _int(minimum: int | None = None, *, nullable: bool = False, **more: Any) -> dict[str, Any]:
    """An integer the store can hold: the bounds say so (SQLite's signed 64 bits), because the
    checker refuses what lies beyond them and the document must not promise more."""
    return {"type": ["integer", "null"] if nullable else "integer",
            "minimum": INT64_MIN if minimum is None else minimum, "maximum": INT64_MAX, **more}


def _obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_ID = _int(1)
_COUNT = _int(0)
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_BOOL = {"type": "boolean"}
_FREE_OBJECT = {"type": "object"}
_ANY: dict[str, Any] = {}
_INTS = {"type": "array", "items": _int()}
#: {"<file id>": mtime}: a key that is no decimal id is refused by the schema (the handler looks
#: the id up: an unknown one is a 404)
_MTIMES = {"type": "object", "propertyNames": {"type": "string", "pattern": "^[0-9]+$"},
           "additionalProperties": {"type": ["number", "null"]}}
_NO_BODY = {"type": "object"}  # nothing is read from it; any JSON object (or none) is fine


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return _obj(("items", "total", "offset", "limit"), items={"type": "array", "items": item},
                total=_COUNT, offset=_COUNT, limit=_COUNT)


# ---------------------------------------------------------------------------------------------
# Request bodies

#: The API's schema of each of a result's stored fields (torc_net.store.schema.RESULT_INFO).
_PATH = {**_STR_OR_NULL, "maxLength": 4096, "default": None}
RESULT_INFO_SCHEMAS: dict[str, Any] = {
    "stdout_path": _PATH, "stderr_path": _PATH, "note": _PATH,
    "failure_cause": {"type": ["string", "null"], "enum": ["oom", "timeout", "signal", "exit",
                                                           None], "default": None},
    "peak_memory_bytes": _int(0, nullable=True, default=None),
    "avg_memory_bytes": _int(0, nullable=True, default=None),
    "peak_cpu_percent": {"type": ["number", "null"], "minimum": 0, "default": None},
    "avg_cpu_percent": {"type": ["number", "null"], "minimum": 0, "default": None},
    # characters (what JSON Schema counts): a runner's last 16 KiB of bytes, decoded, is never
    # more (docs/api.md, job output)
    "stdout_tail": {**_STR_OR_NULL, "maxLength": MAX_TAIL_CHARS, "default": None},
    "stderr_tail": {**_STR_OR_NULL, "maxLength": MAX_TAIL_CHARS, "default": None},
}
assert tuple(RESULT_INFO_SCHEMAS) == RESULT_INFO_NAMES

RESULT_ITEM = _obj(
    ("job_id", "attempt", "run_id", "return_code"),
    job_id=_int(),
    attempt=_int(1),
    run_id=_int(1),
    return_code=_int(),
    status={"type": ["string", "null"], "enum": [*RESULT_STATUSES, None]},
    exec_time_s={"type": "number", "minimum": 0, "default": 0.0},
    recovery_failed={**_BOOL, "default": False},
    **RESULT_INFO_SCHEMAS,
)

CREATE_BODY = _obj(("spec",), spec=_FREE_OBJECT, dry_run={**_BOOL, "default": False})
#: Dynamic jobs: a spec fragment (jobs, files, user_data, resource_requirements), every job of
#: it blocked on ``after`` when given (the job that spawns them).
ADD_JOBS_BODY = _obj(("spec",), spec=_FREE_OBJECT, after=_int(1, nullable=True, default=None))
_NAMED = {"type": "array", "items": _obj(("id", "name"), id=_ID, name=_STR)}
CLAIM_BODY = _obj(
    (),
    limit=_int(0, default=32),
    cpus=_int(0, nullable=True, default=None),
    memory_bytes=_int(0, nullable=True, default=None),
    gpus=_int(0, nullable=True, default=None),
    nodes=_int(0, nullable=True, default=None),
    walltime_s={"type": ["number", "null"], "minimum": 0, "default": None},
    scheduler={"type": ["string", "null"], "default": None},
    claim_seq=_int(0, nullable=True, default=None),
    held_job_ids={**_INTS, "default": None},
    results={"type": "array", "items": RESULT_ITEM, "default": []},
)
REGISTER_BODY = _obj(
    ("hostname",),
    hostname={"type": "string", "minLength": 1, "maxLength": 1024},
    pid=_int(0, nullable=True, default=None),
    num_cpus=_int(0, nullable=True, default=None),
    memory_bytes=_int(0, nullable=True, default=None),
    num_gpus=_int(0, nullable=True, default=None),
    num_nodes=_int(0, nullable=True, default=None),
    slurm_job_id={"type": ["string", "null"], "maxLength": 256, "default": None},
    # A runner's first contact in one round trip: register, and claim as a claim body says
    # (the answer's ``claim`` is that claim's answer).
    claim={**CLAIM_BODY, "type": ["object", "null"], "default": None},
    # ... and the workflow as GET /workflows/{id} gives it (what a runner reads first)
    workflow={**_BOOL, "default": False},
)

# ---------------------------------------------------------------------------------------------
# Responses

_COUNTS = {"type": "object", "additionalProperties": _COUNT}
WORKFLOW = _obj(
    ("id", "name", "user", "created_at", "num_jobs", "run_id", "is_canceled", "is_complete"),
    id=_ID, name=_STR, user=_STR_OR_NULL, description=_STR_OR_NULL, created_at=_NUM,
    num_jobs=_COUNT, run_id=_ID, is_canceled=_BOOL, is_complete=_BOOL, job_id_base=_ID,
    job_id_ranges={"type": "array", "items": {"type": "array", "items": _ID}},
    project=_STR_OR_NULL, metadata=_ANY,
    spec_settings=_FREE_OBJECT, slurm_schedulers={"type": "array"}, num_actions=_COUNT,
    failure_handlers={"type": "array"},
)
STATUS = _obj(("id", "run_id", "counts", "total", "is_complete", "is_canceled"),
              id=_ID, run_id=_ID, counts=_COUNTS, total=_COUNT, is_complete=_BOOL,
              is_canceled=_BOOL)
#: How many jobs one selective reset may name (the downstream jobs it resets are not counted):
#: ~8 MB of ids, well inside a body; more is a whole or --failed-only reset.
MAX_RESET_JOB_IDS = 1_000_000
RESET_BODY = _obj(
    (),
    failed_only={**_BOOL, "default": False},
    job_ids={"type": ["array", "null"], "items": _ID, "maxItems": MAX_RESET_JOB_IDS,
             "default": None},
)
#: A selective reset also answers the ids of the jobs it reset (the chosen and downstream).
RESET_STATUS = {**STATUS, "properties": {**STATUS["properties"], "jobs": _INTS}}
#: New requirements of jobs (``POST /workflows/{id}/jobs/resources``); null: unchanged.
JOB_RESOURCES_BODY = _obj(
    ("jobs",),
    jobs={"type": "array", "minItems": 1, "maxItems": MAX_RESET_JOB_IDS, "items": _obj(
        ("job_id",), job_id=_ID, num_cpus=_int(1, nullable=True, default=None),
        memory_bytes=_int(0, nullable=True, default=None),
        runtime_s=_int(0, nullable=True, default=None))},
    reason={**_STR_OR_NULL, "maxLength": 4096, "default": None},
)
_RESOURCES = _obj(("num_cpus", "memory_bytes", "runtime_s"), num_cpus=_COUNT,
                  memory_bytes=_COUNT, runtime_s=_COUNT)
JOB_RESOURCES_ANSWER = _obj(
    ("changed", "unchanged"),
    changed={"type": "array", "items": _obj(("job_id", "job_name", "old", "new"), job_id=_ID,
                                            job_name=_STR, old=_RESOURCES, new=_RESOURCES)},
    unchanged=_COUNT,
)
JOB = _obj(
    ("id", "workflow_id", "name", "command", "status", "attempt", "run_id"),
    id=_ID, workflow_id=_ID, name=_STR, command=_STR, invocation_script=_STR_OR_NULL,
    status=_STR, attempt=_ID, run_id=_ID, compute_node_id=_int(1, nullable=True),
    num_cpus=_COUNT, num_gpus=_COUNT, num_nodes=_COUNT, memory_bytes=_COUNT, runtime_s=_COUNT,
    resource_requirements=_STR_OR_NULL, scheduler=_STR_OR_NULL, failure_handler=_STR_OR_NULL,
    supports_termination=_BOOL, cancel_on_blocking_job_failure=_BOOL, priority=_int(),
    stdio={"type": ["object", "null"]}, depends_on=_INTS, iteration=_COUNT,
    input_files=_INTS, output_files=_INTS, input_user_data=_INTS, output_user_data=_INTS,
)
FILE = _obj(("id", "name", "path", "st_mtime"), id=_ID, name=_STR, path=_STR,
            st_mtime=_NUM_OR_NULL)
USER_DATA = _obj(("id", "name", "data", "is_ephemeral"), id=_ID, name=_STR, data=_ANY,
                 is_ephemeral=_BOOL)
RESULT = _obj(
    ("id", "job_id", "run_id", "attempt", "return_code", "status", "exec_time_s"),
    id=_ID, job_id=_ID, job_name=_STR_OR_NULL, run_id=_ID, attempt=_ID, return_code=_int(),
    status=_STR, exec_time_s=_NUM, completed_at=_NUM, compute_node_id=_int(1, nullable=True),
    slurm_job_id=_STR_OR_NULL,
    **{k: {key: v for key, v in RESULT_INFO_SCHEMAS[k].items() if key != "default"}
       for k in RESULT_LISTED_NAMES},
)
EVENT = _obj(("id", "ts", "kind", "data"), id=_ID, ts=_NUM, kind=_STR, data=_ANY)
COMPUTE_NODE = _obj(
    ("id", "hostname", "is_active", "jobs"),
    id=_ID, hostname=_STR, pid=_int(0, nullable=True), num_cpus=_int(0, nullable=True),
    memory_bytes=_int(0, nullable=True), num_gpus=_int(0, nullable=True),
    num_nodes=_int(0, nullable=True), slurm_job_id=_STR_OR_NULL, created_at=_NUM,
    is_active=_BOOL, lease_deadline=_NUM_OR_NULL, jobs=_INTS,
)
CLAIMED_JOB = _obj(
    ("id", "name", "command", "attempt", "run_id"),
    id=_ID, name=_STR, command=_STR, invocation_script=_STR_OR_NULL, attempt=_ID, run_id=_ID,
    failure_handler=_STR_OR_NULL, supports_termination=_BOOL, num_cpus=_COUNT,
    num_gpus=_COUNT, memory_bytes=_COUNT, runtime_s=_COUNT,
    stdio={"type": ["object", "null"]},
)
ALLOCATION = _obj(
    ("id", "workflow_id", "slurm_job_id", "state"),
    id=_ID, workflow_id=_ID, slurm_job_id=_STR, scheduler=_STR_OR_NULL,
    action_index=_int(0, nullable=True), submitted_at=_NUM,
    state={"type": "string", "enum": list(ALLOCATION_STATES)},
)
ACTION = {"type": "object", "required": ["index"], "properties": {"index": _COUNT}}
#: The end of one result's output (torc_net.api_output): stored tails, or (dash mode) files.
JOB_OUTPUT = _obj(
    ("job_id", "attempt", "run_id", "stdout", "stderr", "source", "max_bytes"),
    job_id=_ID, attempt=_int(1, nullable=True), run_id=_int(1, nullable=True),
    stdout=_STR_OR_NULL, stderr=_STR_OR_NULL,
    source={"type": ["string", "null"], "enum": ["result", "file", None]}, max_bytes=_COUNT,
)
RESOURCE_SAMPLES = _obj(
    ("job_id", "samples", "source"),
    job_id=_ID,
    samples={"type": "array", "items": _obj(
        ("timestamp", "cpu_percent", "memory_bytes", "num_processes"), timestamp=_NUM,
        cpu_percent=_NUM, memory_bytes=_COUNT, num_processes=_COUNT)},
    source={"type": ["string", "null"], "enum": ["file", None]},
)
_RESULT_COUNTS = {"accepted": _COUNT, "duplicates": _COUNT}
_LIVE = {"is_complete": _BOOL, "is_canceled": _BOOL}

#: Import of earlier runs' results (``workflows import``): a run id is bounded well inside 64
#: bits, since importing one moves the workflow's run past it and every reset adds one more.
MAX_IMPORTED_RUN_ID = (1 << 31) - 1
IMPORTED_RESULT = _obj(
    ("job_id", "run_id", "attempt", "return_code", "status", "completed_at"),
    job_id=_int(),
    run_id=_int(1, maximum=MAX_IMPORTED_RUN_ID),
    attempt=_int(1),
    return_code=_int(),
    status={"type": "string", "enum": list(RESULT_STATUSES)},
    exec_time_s={"type": "number", "minimum": 0, "default": 0.0},
    completed_at=_NUM,
    **RESULT_INFO_SCHEMAS,
)
DEFINITIONS = _obj(
    ("settings", "resource_requirements", "failure_handlers", "slurm_schedulers", "actions"),
    settings=_FREE_OBJECT,
    resource_requirements={"type": "array", "items": _obj(
        ("name", "num_cpus", "num_gpus", "num_nodes", "memory_bytes", "runtime_s"),
        name=_STR, num_cpus=_COUNT, num_gpus=_COUNT, num_nodes=_COUNT, memory_bytes=_COUNT,
        runtime_s=_COUNT, memory=_STR, runtime=_STR)},
    failure_handlers={"type": "array", "items": _obj(
        ("name", "rules"), name=_STR, rules={"type": "array", "items": _FREE_OBJECT})},
    slurm_schedulers={"type": "array", "items": _obj(("name",), name=_STR)},
    actions={"type": "array", "items": _obj(("trigger_type", "action_type"),
                                            trigger_type=_STR, action_type=_STR)},
)

#: The dependency graph for the dashboard (torc_net.api_dag): every node and stored edge (a
#: barrier is one node), or above ``max_nodes`` jobs a summary by job-name pattern.
_DAG_STATUS = {"type": ["string", "null"],
               "enum": [*(s.label for s in JobStatus), None]}
DAG_GRAPH = _obj(
    ("mode", "num_jobs", "num_edges", "nodes", "edges"),
    mode={"const": "graph"}, num_jobs=_COUNT, num_edges=_COUNT,
    nodes={"type": "array", "items": _obj(
        ("id", "kind", "job_id", "name", "status", "group"), id=_STR,
        kind={"type": "string", "enum": ["job", "barrier"]}, job_id=_int(1, nullable=True),
        name=_STR, status=_DAG_STATUS, group=_STR)},
    edges={"type": "array", "items": {"type": "array", "items": _STR, "minItems": 2,
                                      "maxItems": 2}},
)
DAG_SUMMARY = _obj(
    ("mode", "num_jobs", "num_edges", "num_patterns", "truncated", "groups", "edges"),
    mode={"const": "summary"}, num_jobs=_COUNT, num_edges=_COUNT, num_patterns=_COUNT,
    truncated=_BOOL,
    groups={"type": "array", "items": _obj(
        ("pattern", "count", "counts"), pattern=_STR, count=_COUNT, counts=_COUNTS)},
    # [pattern, pattern, dependencies as written]
    edges={"type": "array", "items": {"type": "array", "minItems": 3, "maxItems": 3,
                                      "items": {"type": ["string", "integer"]}}},
)
DAG = {"oneOf": [DAG_GRAPH, DAG_SUMMARY]}

# Access groups (torc_net.access, torc_net.api_access)
_ROLE = {"type": "string", "enum": ["member", "admin"]}
_USER_NAME = PATH_SCHEMAS["string"]
ACCESS_GROUP_BODY = _obj(
    ("name",),
    name={"type": "string", "minLength": 1, "maxLength": 128, "pattern": NAME_PATTERN},
    description={**_STR_OR_NULL, "maxLength": 4096, "default": None},
)
ACCESS_GROUP = _obj(("id", "name", "description", "created_at"), id=_ID, name=_STR,
                    description=_STR_OR_NULL, created_at=_NUM)
#: A group as one of a user's: with their role in it.
USER_GROUP = {**ACCESS_GROUP, "required": [*ACCESS_GROUP["required"], "role"],
              "properties": {**ACCESS_GROUP["properties"], "role": _ROLE}}
MEMBER_BODY = _obj(("user_name",), user_name=_USER_NAME, role={**_ROLE, "default": "member"})
MEMBERSHIP = _obj(("group_id", "user_name", "role", "created_at"), group_id=_ID,
                  user_name=_STR, role=_ROLE, created_at=_NUM)
WORKFLOW_GROUP_LINK = _obj(("workflow_id", "group_id", "created_at"), workflow_id=_ID,
                           group_id=_ID, created_at=_NUM)
_GROUP_PATH = "/access_groups/<int:group_id>"
_SHARE_PATH = "/workflows/<int:workflow_id>/access_groups/<int:group_id>"
ACCESS_ROUTES: list[Route] = [
    Route("POST", "/access_groups", "create_access_group",
          "Create an access group (server admins only)", body=ACCESS_GROUP_BODY, status=201,
          response=ACCESS_GROUP),
    Route("GET", "/access_groups", "list_access_groups",
          "List access groups: all of them to server admins, the caller's to others",
          query=_PAGED, response=_page(ACCESS_GROUP)),
    Route("GET", _GROUP_PATH, "get_access_group",
          "One access group (its members and server admins)", response=ACCESS_GROUP),
    Route("DELETE", _GROUP_PATH, "delete_access_group",
          "Delete an access group, its memberships and its workflow links (server admins "
          "only)", response=_obj(("id", "deleted"), id=_ID, deleted=_BOOL)),
    Route("POST", f"{_GROUP_PATH}/members", "add_user_to_group",
          "Add a user to a group, or set their role (the group's admins and server admins)",
          body=MEMBER_BODY, status=201, other_statuses=(200,), response=MEMBERSHIP),
    Route("GET", f"{_GROUP_PATH}/members", "list_group_members",
          "A group's members (its members and server admins)", query=_PAGED,
          response=_page(MEMBERSHIP)),
    Route("DELETE", f"{_GROUP_PATH}/members/<string:user_name>", "remove_user_from_group",
          "Remove a user from a group (the group's admins and server admins)",
          response=MEMBERSHIP),
    Route("GET", "/users/<string:user_name>/groups", "list_user_groups",
          "The groups a user is a member of, with their role (the user and server admins)",
          query=_PAGED, response=_page(USER_GROUP)),
    Route("GET", "/workflows/<int:workflow_id>/access_groups", "list_workflow_groups",
          "The groups a workflow is shared with (whoever may see it)", query=_PAGED,
          response=_page(ACCESS_GROUP)),
    Route("POST", _SHARE_PATH, "add_workflow_to_group",
          "Share a workflow with a group (its owner and server admins)", body=_NO_BODY,
          status=201, other_statuses=(200,), response=WORKFLOW_GROUP_LINK),
    Route("DELETE", _SHARE_PATH, "remove_workflow_from_group",
          "Stop sharing a workflow with a group (its owner and server admins)",
          response=WORKFLOW_GROUP_LINK),
    Route("GET", "/access_check/<int:workflow_id>/<string:user_name>", "check_workflow_access",
          "Whether a user may see and change a workflow (server admins, and the user)",
          response=_obj(("workflow_id", "user_name", "has_access"), workflow_id=_ID,
                        user_name=_STR, has_access=_BOOL)),
]

CLAIM_RESPONSE = _obj(("jobs", "is_complete", "is_canceled", "counts"),
                      jobs={"type": "array", "items": CLAIMED_JOB}, counts=_COUNTS,
                      **_LIVE, **_RESULT_COUNTS)

ROUTES: list[Route] = [
    Route("GET", "/ping", "ping", "Liveness check",
          response=_obj(("status",), status=_STR)),
    Route("GET", "/version", "version",
          "Server and API version, and the URL runners should use (serve --advertise-url) "
          "and the file it is written to (serve --url-file)",
          response=_obj(("version", "api", "url", "url_file"), version=_STR, api=_STR,
                        url=_STR_OR_NULL, url_file=_STR_OR_NULL)),
    Route("GET", "/openapi.json", "openapi", "This OpenAPI document", response=_FREE_OBJECT),
    Route("POST", "/workflows", "create_workflow", "Create and initialize a workflow from a spec",
          body=CREATE_BODY, status=201, other_statuses=(200,),
          response=_obj(("id", "name", "jobs", "dependencies"), id=_int(1, nullable=True),
                        name=_STR, jobs=_COUNT, dependencies=_COUNT, barriers=_COUNT,
                        files=_COUNT, user_data=_COUNT,
                        warnings={"type": "array", "items": _STR})),
    Route("GET", "/workflows", "list_workflows", "List workflows", query=_PAGED,
          response=_page(WORKFLOW)),
    Route("GET", "/workflows/<int:workflow_id>", "get_workflow", "One workflow",
          response=WORKFLOW),
    Route("DELETE", "/workflows/<int:workflow_id>", "delete_workflow", "Delete a workflow",
          response=_obj(("id", "deleted"), id=_ID, deleted=_BOOL)),
    Route("POST", "/workflows/<int:workflow_id>/cancel", "cancel_workflow", "Cancel a workflow",
          body=_NO_BODY, response=STATUS),
    Route("POST", "/workflows/<int:workflow_id>/initialize", "initialize_workflow",
          "Initialize uninitialized jobs", body=_NO_BODY, response=STATUS),
    Route("POST", "/workflows/<int:workflow_id>/reinitialize", "reinitialize_workflow",
          "Reset changed and unfinished jobs for a new run",
          body=_obj((), dry_run={**_BOOL, "default": False},
                    file_mtimes={**_MTIMES, "default": {}}),
          response=_obj(("jobs", "dry_run", "run_id"), jobs=_INTS, dry_run=_BOOL, run_id=_ID)),
    Route("POST", "/workflows/<int:workflow_id>/reset_status", "reset_status",
          "Reset job statuses (all, the failed part, or chosen jobs and their downstream) "
          "and initialize again", body=RESET_BODY, response=RESET_STATUS),
    Route("POST", "/workflows/<int:workflow_id>/confirm_failed", "confirm_failed",
          "Held failures (pending_failed, use_pending_failed) become failures",
          body=_obj((), job_ids={"type": ["array", "null"], "items": _ID,
                                 "maxItems": MAX_RESET_JOB_IDS, "default": None}),
          response=STATUS),
    Route("GET", "/workflows/<int:workflow_id>/status", "workflow_status",
          "Counts per status", response=STATUS),
    Route("GET", "/workflows/<int:workflow_id>/jobs", "list_jobs",
          "List jobs (of one status, whose name contains a text; sorted by id, name, status "
          "or attempt, ties by id)",
          query=("status", "name_contains", "sort_by", "reverse_sort", *_PAGED),
          response=_page(JOB)),
    Route("GET", "/workflows/<int:workflow_id>/jobs/<int:job_id>", "get_job", "One job",
          response=JOB),
    Route("POST", "/workflows/<int:workflow_id>/jobs", "add_jobs",
          "Add jobs to a live workflow (dynamic jobs): a spec fragment, blocked on `after`",
          body=ADD_JOBS_BODY,
          response=_obj(("workflow_id", "iteration", "jobs", "status"), workflow_id=_ID,
                        iteration=_COUNT, after=_int(1, nullable=True), jobs=_NAMED,
                        files=_NAMED, user_data=_NAMED, status=STATUS)),
    Route("POST", "/workflows/<int:workflow_id>/jobs/resources", "set_job_resources",
          "Rewrite jobs' CPUs, memory and runtime (refused while one of them is pending or "
          "running); ready jobs are claimed by the new values at once",
          body=JOB_RESOURCES_BODY, response=JOB_RESOURCES_ANSWER),
    Route("POST", "/workflows/<int:workflow_id>/jobs/<int:job_id>/disable", "disable_job",
          "Disable a job", body=_NO_BODY, response=JOB),
    Route("GET", "/workflows/<int:workflow_id>/jobs/<int:job_id>/output", "job_output",
          "The end of a job's stdout and stderr (its latest result, or ?run_id= and "
          "?attempt=) as its runner sent it; never a file a client named",
          query=("run_id", "attempt"), response=JOB_OUTPUT),
    Route("GET", "/workflows/<int:workflow_id>/jobs/<int:job_id>/resource_samples",
          "job_resource_samples",
          "A job's time-series resource samples (only a server that reads job files: "
          "`torc-trio dash` on a local database; else none)",
          response=RESOURCE_SAMPLES),
    Route("GET", "/workflows/<int:workflow_id>/files", "list_files", "List files",
          query=_PAGED, response=_page(FILE)),
    Route("GET", "/workflows/<int:workflow_id>/files/<int:file_id>", "get_file", "One file",
          response=FILE),
    Route("POST", "/workflows/<int:workflow_id>/files/mtimes", "record_mtimes",
          "Record file modification times", body=_obj(("mtimes",), mtimes=_MTIMES),
          response=_obj(("recorded",), recorded=_COUNT)),
    Route("GET", "/workflows/<int:workflow_id>/user_data", "list_user_data", "List user data",
          query=_PAGED, response=_page(USER_DATA)),
    Route("GET", "/workflows/<int:workflow_id>/user_data/<int:user_data_id>", "get_user_data",
          "One user data item", response=USER_DATA),
    Route("PUT", "/workflows/<int:workflow_id>/user_data/<int:user_data_id>", "put_user_data",
          "Store user data (marks it changed)", body=_obj(("data",), data=_ANY),
          response=USER_DATA),
    Route("GET", "/workflows/<int:workflow_id>/results", "list_results",
          "List results (of one status, run or job; failed=true: non-zero return codes)",
          query=("status", "run_id", "job_id", "failed", *_PAGED), response=_page(RESULT)),
    Route("GET", "/workflows/<int:workflow_id>/events", "list_events", "List workflow events",
          query=("after", *_PAGED), response=_page(EVENT)),
    Route("GET", "/workflows/<int:workflow_id>/dag", "workflow_dag",
          "The dependency graph (barriers as one node; each job's name pattern), or above "
          "max_nodes jobs (default 3000, at most 5000) a summary by name pattern",
          query=("max_nodes",), response=DAG),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes", "register_compute_node",
          "Register a compute node (runner); with ``claim``, also claim its first jobs",
          body=REGISTER_BODY, status=201,
          response=_obj(("id", "lease_s"), id=_ID, lease_s=_NUM, claim=CLAIM_RESPONSE,
                        workflow=WORKFLOW)),
    Route("GET", "/workflows/<int:workflow_id>/compute_nodes", "list_compute_nodes",
          "List compute nodes", query=_PAGED, response=_page(COMPUTE_NODE)),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/heartbeat",
          "heartbeat", "Renew a compute node's lease", body=_NO_BODY,
          response=_obj(("is_complete", "is_canceled", "active"), active=_BOOL, **_LIVE)),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/claim",
          "claim_jobs", "Claim ready jobs (and report results, say which jobs are held)",
          body=CLAIM_BODY, response=CLAIM_RESPONSE),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/start",
          "start_jobs", "Report jobs started", body=_obj(("job_ids",), job_ids=_INTS),
          response=_obj(("started",), started=_COUNT)),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/complete",
          "complete_jobs", "Report job results (idempotent)",
          body=_obj(("results",), results={"type": "array", "items": RESULT_ITEM}),
          response=_obj(("accepted", "duplicates", "is_complete", "is_canceled"),
                        **_RESULT_COUNTS, **_LIVE)),
    Route("POST", "/workflows/<int:workflow_id>/compute_nodes/<int:compute_node_id>/deactivate",
          "deactivate_compute_node", "Release a compute node's jobs", body=_NO_BODY,
          response=_obj(("released",), released=_INTS)),
    Route("POST", "/workflows/<int:workflow_id>/actions/claim", "claim_actions",
          "Claim the workflow's due actions (each is handed out exactly once)",
          body=_obj((), compute_node_id=_int(1, nullable=True, default=None),
                    action_types={"type": ["array", "null"], "items": _STR, "default": None},
                    trigger_types={"type": ["array", "null"], "items": _STR, "default": None},
                    scheduler_types={"type": ["array", "null"], "items": _STR,
                                     "default": None}),
          response=_obj(("actions", "pending", "total"),
                        actions={"type": "array", "items": ACTION}, pending=_COUNT,
                        total=_COUNT)),
    Route("GET", "/workflows/<int:workflow_id>/actions", "list_actions",
          "The workflow's actions, claimed and due", response=_page(ACTION)),
    Route("POST", "/workflows/<int:workflow_id>/allocations", "record_allocation",
          "Record a submitted Slurm allocation",
          body=_obj(("slurm_job_id",),
                    slurm_job_id={"type": "string", "minLength": 1, "maxLength": 256},
                    scheduler={"type": ["string", "null"], "default": None},
                    action_index=_int(0, nullable=True, default=None)),
          status=201, response=ALLOCATION),
    Route("GET", "/workflows/<int:workflow_id>/allocations", "list_allocations",
          "List the workflow's Slurm allocations", query=_PAGED, response=_page(ALLOCATION)),
    Route("POST", "/workflows/<int:workflow_id>/allocations/<int:allocation_id>/state",
          "set_allocation_state", "Record an allocation's state (e.g. gone, canceled)",
          body=_obj(("state",), state={"type": "string", "enum": list(ALLOCATION_STATES)}),
          response=ALLOCATION),
    Route("GET", "/workflows/<int:workflow_id>/definitions", "workflow_definitions",
          "The workflow's settings, resource requirements, failure handlers, Slurm schedulers "
          "and actions, as created (for export)", response=DEFINITIONS),
    Route("POST", "/workflows/<int:workflow_id>/results/import", "import_results",
          "Record results of earlier runs (import); the workflow's run moves past them",
          body=_obj(("results",), results={"type": "array", "items": IMPORTED_RESULT}),
          response=_obj(("imported", "duplicates", "run_id"), imported=_COUNT,
                        duplicates=_COUNT, run_id=_ID)),
    Route("GET", "/workflows/<int:workflow_id>/events/ws", "workflow_feed",
          "Websocket feed of one workflow", websocket=True),
    Route("GET", "/events/ws", "feed", "Websocket feed of all visible workflows",
          websocket=True),
    *ACCESS_ROUTES,
]

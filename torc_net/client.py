"""Typed async client for the Torc HTTP API (docs/api.md), with retry and backoff.

Retry policy of :meth:`TorcClient.call`:

* connection errors (refused, reset, EOF, protocol errors) and per-attempt timeouts, and
  ``502``/``503``/``504`` responses (a busy server, or a workflow being reloaded after a
  failed write), and ``429`` (this address is locked out for a while after too many failed
  logins, by someone else perhaps), are retried with exponential backoff and full jitter
  (``uniform(0, min(max_backoff_s, 0.1 * 2**n))``); a ``Retry-After`` header (seconds) is
  honoured as a lower bound. Retrying stops once ``wait_for_server_s`` have elapsed since the
  first attempt, and :class:`ServerUnreachable` is raised.
* any other status >= 400 raises :class:`ApiError` at once.
* a server that moved: with a ``url_source`` (``TORC_API_URL_FILE``, the file ``serve
  --url-file`` writes), a connection failure past the first retry asks it for the server's URL
  now; a new one replaces the client's base URL (and its connections) and is tried at once.
  The compute node, claims and held jobs are the server's (in its database), so they carry
  over to a server restarted elsewhere on the same database. A source that fails (the file
  unreadable or garbage) is logged, once per message, and the old URL kept.

Timeouts are set here, at the call site of the HTTP layer: each attempt runs under
``trio.fail_after(attempt_timeout_s)``.
"""

from __future__ import annotations

import json as _json
import logging
import math
import os
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import trio

from .client_access import AccessGroupsClient
from .credentials import env_credentials
from .http import ConnectionFailed, HttpConnectionPool, HttpResponse, basic_auth_header
from .http import parse_base_url as _parse_base_url
from .tls import TlsError, TlsSettings, default_settings, describe_ssl_error

if TYPE_CHECKING:  # imported where a feed is opened: most commands never open one (~45 ms)
    import trio_websocket

__all__ = [
    "ApiError",
    "EventFeed",
    "ServerUnreachable",
    "TorcClient",
    "events_ws_url",
    "open_event_feed",
    "subscribe_events",
]

log = logging.getLogger("torc_net.client")

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_BACKOFF_BASE_S = 0.1


class ApiError(Exception):
    """The server answered with an error status (``{"error", "detail"}`` body)."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: Any = None,
        *,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.method = method
        self.path = path
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.method} {self.path}: " if self.method else ""
        msg = f"{where}HTTP {self.status} {self.error}"
        if isinstance(self.detail, list):
            if self.detail:
                msg += ":\n  " + "\n  ".join(str(d) for d in self.detail)
        elif self.detail not in (None, ""):
            msg += f": {self.detail}"
        return msg

    @classmethod
    def from_response(cls, resp: HttpResponse, method: str, path: str) -> ApiError:
        error: str = resp.reason or "error"
        detail: Any = None
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if isinstance(doc, dict) and ("error" in doc or "detail" in doc):
            error = str(doc.get("error", error))
            detail = doc.get("detail")
        elif resp.body:
            detail = resp.text[:2000]
        return cls(resp.status, error, detail, method=method, path=path)


class ServerUnreachable(Exception):
    """The server could not be reached (or stayed unavailable) within ``wait_for_server_s``."""


def _retry_after_s(resp: HttpResponse) -> float | None:
    value = resp.header("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return max(0.0, seconds)


def _path(*parts: object) -> str:
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


def _query(path: str, params: Mapping[str, Any]) -> str:
    items = {k: v for k, v in params.items() if v is not None}
    return f"{path}?{urlencode(items)}" if items else path


def _status(text: str | None) -> str | None:
    """A status as the server names it (a user may type ``Failed``)."""
    return None if text is None else text.strip().lower()


def _mtimes(mtimes: Mapping[Any, float | None]) -> dict[str, float | None]:
    return {str(k): v for k, v in mtimes.items()}


class TorcClient(AccessGroupsClient):
    """Async client of one Torc server. Use as ``async with TorcClient(url) as c: ...``."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        wait_for_server_s: float = 1200,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
        attempt_timeout_s: float = 120.0,
        max_idle: int = 4,
        on_retry: Callable[[str, float], None] | None = None,
        url_source: Callable[[], str] | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: what https:// URLs trust (torc_net.tls; default: the environment's)
        self.tls = tls if tls is not None else default_settings()
        #: where the server is now, asked when it stops answering (module docstring); raises
        #: when it cannot say
        self.url_source = url_source
        self._url_source_problem = ""
        self._max_idle = max_idle
        #: told (failure, seconds it will keep trying) before each retry: a command at a
        #: terminal says at once that it is waiting, instead of waiting silently
        self.on_retry = on_retry
        self.auth = auth
        self.wait_for_server_s = wait_for_server_s
        self.max_backoff_s = max_backoff_s
        self.attempt_timeout_s = attempt_timeout_s
        self._rng = rng if rng is not None else random.Random()
        self._pool = HttpConnectionPool(self.base_url, auth=auth, max_idle=max_idle,
                                        tls=self.tls)
        #: trio.current_time() of the last successful answer (a runner's heartbeat is due
        #: only when nothing else has reached the server for a while).
        self.last_answer_at = -math.inf
        #: HTTP attempts made (including retries)
        self.requests = 0
        #: attempts that were followed by another attempt
        self.retries = 0
        #: 503 responses received
        self.status_503 = 0
        #: times the base URL changed to the one ``url_source`` named
        self.url_switches = 0

    @classmethod
    def from_env(cls, url: str | None = None, **kwargs: Any) -> TorcClient:
        """``url`` or ``$TORC_API_URL``; Basic auth from ``$TORC_USERNAME``/``$TORC_PASSWORD``
        or ``$TORC_CREDENTIALS_FILE`` (:func:`torc_net.credentials.env_credentials`); TLS trust
        from ``$TORC_CA_FILE`` (:mod:`torc_net.tls`)."""
        url = url or os.environ.get("TORC_API_URL")
        if not url:
            raise ValueError("no server URL: pass one or set TORC_API_URL")
        if "auth" not in kwargs:
            kwargs["auth"] = env_credentials()
        return cls(url, **kwargs)

    @property
    def pool(self) -> HttpConnectionPool:
        return self._pool

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> TorcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _backoff_s(self, attempt: int) -> float:
        cap = min(self.max_backoff_s, _BACKOFF_BASE_S * 2 ** min(attempt, 32))
        return self._rng.uniform(0.0, cap)

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        retry: bool = True,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one API request, retrying per the module policy; return the parsed JSON."""
        method = method.upper()
        if params:
            path = _query(path, params)
        start = trio.current_time()
        deadline = start + self.wait_for_server_s
        attempt = 0
        while True:
            self.requests += 1
            failure: str
            retry_after: float | None = None
            try:
                with trio.fail_after(self.attempt_timeout_s):
                    resp = await self._pool.request(method, path, json_body=json)
            except ConnectionFailed as exc:
                failure = str(exc)
                if not retry:
                    raise ServerUnreachable(f"{method} {path}: {failure}") from exc
                if attempt >= 1 and await self._follow_url_source():
                    attempt = 0
                    continue  # the server moved: try its new address at once
            except trio.TooSlowError as exc:
                failure = f"no response within {self.attempt_timeout_s} s"
                if not retry:
                    raise ServerUnreachable(f"{method} {path}: {failure}") from exc
                if attempt >= 1 and await self._follow_url_source():
                    attempt = 0
                    continue
            else:
                status = resp.status
                if status < 400:
                    self.last_answer_at = trio.current_time()
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise ApiError(
                            status,
                            "invalid JSON response",
                            resp.text[:2000],
                            method=method,
                            path=path,
                        ) from exc
                if status == 503:
                    self.status_503 += 1
                if status not in _RETRY_STATUSES or not retry:
                    raise ApiError.from_response(resp, method, path)
                failure = f"HTTP {status}"
                retry_after = _retry_after_s(resp)

            now = trio.current_time()
            remaining = deadline - now
            if remaining <= 0:
                raise ServerUnreachable(
                    f"{method} {self.base_url}{path}: gave up after {attempt + 1} attempts in "
                    f"{now - start:.1f} s (wait_for_server_s={self.wait_for_server_s}); "
                    f"last error: {failure}"
                )
            delay = self._backoff_s(attempt)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if self.on_retry is not None:
                self.on_retry(failure, remaining)
            attempt += 1
            self.retries += 1
            await trio.sleep(min(delay, remaining))

    async def _follow_url_source(self) -> bool:
        """Ask ``url_source`` where the server is; switch to a new URL (True) or keep ours."""
        if self.url_source is None:
            return False
        try:
            url = self.url_source().rstrip("/")
            if url == self.base_url:
                return False
            pool = HttpConnectionPool(url, auth=self.auth, max_idle=self._max_idle,
                                      tls=self.tls)
        except Exception as exc:  # the file unreadable, garbage: keep trying our URL
            problem = str(exc)
            if problem != self._url_source_problem:
                self._url_source_problem = problem
                log.warning("server at %s not answering, and where it moved is unknown: %s",
                            self.base_url, problem)
            return False
        self._url_source_problem = ""
        log.warning("server at %s not answering; it is now at %s (URL file): switching",
                    self.base_url, url)
        old, self._pool, self.base_url = self._pool, pool, url
        self.url_switches += 1
        await old.aclose()  # requests still on it finish; idle connections go now
        return True

    # ------------------------------------------------------------------ service
    async def ping(self) -> dict[str, Any]:
        return await self.call("GET", "/ping")  # type: ignore[no-any-return]

    async def version(self) -> dict[str, Any]:
        return await self.call("GET", "/version")  # type: ignore[no-any-return]

    async def openapi(self) -> dict[str, Any]:
        return await self.call("GET", "/openapi.json")  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- workflows
    async def create_workflow(
        self, spec_doc: Mapping[str, Any], dry_run: bool = False
    ) -> dict[str, Any]:
        body = {"spec": dict(spec_doc), "dry_run": dry_run}
        return await self.call("POST", "/workflows", body)  # type: ignore[no-any-return]

    async def list_workflows(self, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", "/workflows", params={"offset": offset, "limit": limit}
        )

    async def iter_workflows(self, *, page_size: int = 100) -> AsyncIterator[dict[str, Any]]:
        async for item in self._iter_pages("/workflows", {}, page_size):
            yield item

    async def get_workflow(self, workflow_id: int) -> dict[str, Any]:
        return await self.call("GET", _path("workflows", workflow_id))  # type: ignore[no-any-return]

    async def delete_workflow(self, workflow_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "DELETE", _path("workflows", workflow_id)
        )

    async def cancel_workflow(self, workflow_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "cancel")
        )

    async def initialize_workflow(self, workflow_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "initialize")
        )

    async def reinitialize_workflow(
        self,
        workflow_id: int,
        dry_run: bool = False,
        file_mtimes: Mapping[Any, float | None] | None = None,
    ) -> dict[str, Any]:
        body = {"dry_run": dry_run, "file_mtimes": _mtimes(file_mtimes or {})}
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "reinitialize"), body
        )

    async def reset_status(self, workflow_id: int, failed_only: bool = False,
                           job_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """``job_ids``: reset those jobs and everything downstream of them (others may run)."""
        body: dict[str, Any] = {"failed_only": failed_only}
        if job_ids is not None:
            body["job_ids"] = list(job_ids)
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "reset_status"), body
        )

    async def set_job_resources(self, workflow_id: int, jobs: Sequence[Mapping[str, Any]],
                                reason: str | None = None) -> dict[str, Any]:
        """New requirements: each item ``{"job_id", "num_cpus"?, "memory_bytes"?,
        "runtime_s"?}`` (left out: unchanged). Refused while one of the jobs is pending or
        running; ``reason`` is kept in each job's ``job_resources`` event."""
        body = {"jobs": [dict(j) for j in jobs], "reason": reason}
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "jobs", "resources"), body
        )

    async def confirm_failed(self, workflow_id: int,
                             job_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Held failures (pending_failed) become failures: those of ``job_ids``, or all."""
        body: dict[str, Any] = {"job_ids": None if job_ids is None else list(job_ids)}
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "confirm_failed"), body
        )

    async def workflow_status(self, workflow_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("workflows", workflow_id, "status")
        )

    # ------------------------------------------------------------------- paging
    async def _iter_pages(
        self, path: str, params: Mapping[str, Any], page_size: int
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield every item of a paged ``{"items", "total", "offset", "limit"}`` collection."""
        offset = 0
        # Bounded: stops on a short/empty page or when ``total`` is reached.
        while True:
            page = await self.call(
                "GET", path, params={**params, "offset": offset, "limit": page_size}
            )
            items = page.get("items", [])
            for item in items:
                yield item
            offset += len(items)
            total = page.get("total")
            if not items or len(items) < page_size or (total is not None and offset >= total):
                return

    # --------------------------------------------------------------------- jobs
    async def list_jobs(
        self, workflow_id: int, status: str | None = None, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET",
            _path("workflows", workflow_id, "jobs"),
            params={"status": _status(status), "offset": offset, "limit": limit},
        )

    async def iter_jobs(
        self, workflow_id: int, status: str | None = None, *, page_size: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        path = _path("workflows", workflow_id, "jobs")
        async for item in self._iter_pages(path, {"status": _status(status)}, page_size):
            yield item

    async def get_job(self, workflow_id: int, job_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("workflows", workflow_id, "jobs", job_id)
        )

    async def add_jobs(self, workflow_id: int, spec: Mapping[str, Any],
                       after: int | None = None) -> dict[str, Any]:
        """Dynamic jobs: add a spec fragment's jobs (and files, user data) to a live workflow,
        each blocked on job ``after`` when given. Not retried on a lost answer (a retry would
        add the jobs twice)."""
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "jobs"),
            {"spec": dict(spec), "after": after}, retry=False,
        )

    async def disable_job(self, workflow_id: int, job_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "jobs", job_id, "disable")
        )

    # -------------------------------------------------------- files / user_data
    async def list_files(
        self, workflow_id: int, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET",
            _path("workflows", workflow_id, "files"),
            params={"offset": offset, "limit": limit},
        )

    async def iter_files(
        self, workflow_id: int, *, page_size: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        async for item in self._iter_pages(_path("workflows", workflow_id, "files"), {}, page_size):
            yield item

    async def get_file(self, workflow_id: int, file_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("workflows", workflow_id, "files", file_id)
        )

    async def record_file_mtimes(
        self, workflow_id: int, mtimes: Mapping[Any, float | None]
    ) -> Any:
        return await self.call(
            "POST", _path("workflows", workflow_id, "files", "mtimes"), {"mtimes": _mtimes(mtimes)}
        )

    async def list_user_data(
        self, workflow_id: int, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET",
            _path("workflows", workflow_id, "user_data"),
            params={"offset": offset, "limit": limit},
        )

    async def get_user_data(self, workflow_id: int, ud_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("workflows", workflow_id, "user_data", ud_id)
        )

    async def put_user_data(self, workflow_id: int, ud_id: int, data: Any) -> Any:
        return await self.call(
            "PUT", _path("workflows", workflow_id, "user_data", ud_id), {"data": data}
        )

    # ------------------------------------------------------------------ results
    async def list_results(
        self, workflow_id: int, status: str | None = None, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET",
            _path("workflows", workflow_id, "results"),
            params={"status": _status(status), "offset": offset, "limit": limit},
        )

    async def iter_results(
        self, workflow_id: int, status: str | None = None, *, page_size: int = 1000,
        run_id: int | None = None, job_id: int | None = None, failed: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every result, optionally of one status, run or job, or only the failed ones
        (non-zero return codes)."""
        path = _path("workflows", workflow_id, "results")
        params = {"status": _status(status), "run_id": run_id, "job_id": job_id,
                  "failed": "true" if failed else None}
        async for item in self._iter_pages(path, params, page_size):
            yield item

    async def list_events(
        self, workflow_id: int, after: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET",
            _path("workflows", workflow_id, "events"),
            params={"after": after, "limit": limit},
        )

    async def workflow_definitions(self, workflow_id: int) -> dict[str, Any]:
        """Settings, resource requirements, failure handlers, Slurm schedulers and actions."""
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("workflows", workflow_id, "definitions")
        )

    async def import_results(
        self, workflow_id: int, results: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Record results of earlier runs (``job_id``, ``run_id``, ``attempt``, ``return_code``,
        ``status``, ``exec_time_s``, ``completed_at``); the workflow's run moves past them."""
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "results", "import"),
            {"results": [dict(r) for r in results]},
        )

    # ----------------------------------------------------------- runner protocol
    async def register_compute_node(self, workflow_id: int, **resources: Any) -> dict[str, Any]:
        """Body keys: hostname, pid, num_cpus, memory_bytes, num_gpus, num_nodes, slurm_job_id."""
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "compute_nodes"), resources
        )

    async def list_compute_nodes(
        self, workflow_id: int, offset: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET",
            _path("workflows", workflow_id, "compute_nodes"),
            params={"offset": offset, "limit": limit},
        )

    async def heartbeat(self, workflow_id: int, compute_node_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "compute_nodes", compute_node_id, "heartbeat")
        )

    async def claim_jobs(
        self,
        workflow_id: int,
        compute_node_id: int,
        limit: int = 32,
        cpus: int | None = None,
        memory_bytes: int | None = None,
        gpus: int | None = None,
        nodes: int | None = None,
        walltime_s: float | None = None,
        scheduler: str | None = None,
        claim_seq: int | None = None,
        held_job_ids: list[int] | None = None,
        results: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``claim_seq``: a number new for each claim of this compute node; a retry of the same
        claim (after a broken connection) then returns the same jobs, not a second lease.
        ``results``: finished jobs to report first (as :meth:`complete_jobs`), in the same
        round trip; the answer then also has ``accepted`` and ``duplicates``."""
        body: dict[str, Any] = {
            "claim_seq": claim_seq,
            "limit": limit,
            "cpus": cpus,
            "memory_bytes": memory_bytes,
            "gpus": gpus,
            "nodes": nodes,
            "walltime_s": walltime_s,
            "scheduler": scheduler,
        }
        if held_job_ids is not None:
            body["held_job_ids"] = held_job_ids
        if results:
            body["results"] = [dict(r) for r in results]
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "compute_nodes", compute_node_id, "claim"), body
        )

    async def start_jobs(
        self, workflow_id: int, compute_node_id: int, job_ids: list[int]
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST",
            _path("workflows", workflow_id, "compute_nodes", compute_node_id, "start"),
            {"job_ids": list(job_ids)},
        )

    async def complete_jobs(
        self, workflow_id: int, compute_node_id: int, results: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST",
            _path("workflows", workflow_id, "compute_nodes", compute_node_id, "complete"),
            {"results": [dict(r) for r in results]},
        )

    # ----------------------------------------------------------- actions and allocations
    async def claim_actions(
        self, workflow_id: int, compute_node_id: int | None = None, *,
        action_types: list[str] | None = None, trigger_types: list[str] | None = None,
        scheduler_types: list[str] | None = None,
    ) -> dict[str, Any]:
        """Due actions, each handed to exactly one claimant (schedule_nodes actions only of
        ``scheduler_types``, when given)."""
        body: dict[str, Any] = {"compute_node_id": compute_node_id}
        if action_types is not None:
            body["action_types"] = action_types
        if trigger_types is not None:
            body["trigger_types"] = trigger_types
        if scheduler_types is not None:
            body["scheduler_types"] = scheduler_types
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "actions", "claim"), body)

    async def list_actions(self, workflow_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "GET", _path("workflows", workflow_id, "actions"))

    async def record_allocation(
        self, workflow_id: int, slurm_job_id: str, scheduler: str | None = None,
        action_index: int | None = None,
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "allocations"),
            {"slurm_job_id": slurm_job_id, "scheduler": scheduler, "action_index": action_index})

    async def list_allocations(self, workflow_id: int) -> list[dict[str, Any]]:
        reply = await self.call("GET", _path("workflows", workflow_id, "allocations"),
                                params={"offset": 0, "limit": 100000})
        return list(reply["items"])

    async def set_allocation_state(
        self, workflow_id: int, allocation_id: int, state: str
    ) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "allocations", allocation_id, "state"),
            {"state": state})

    async def deactivate(self, workflow_id: int, compute_node_id: int) -> dict[str, Any]:
        return await self.call(  # type: ignore[no-any-return]
            "POST", _path("workflows", workflow_id, "compute_nodes", compute_node_id, "deactivate")
        )


def events_ws_url(base_url: str, workflow_id: int | None) -> str:
    """``ws://host:port/<base>/workflows/{id}/events/ws`` (or ``/events/ws`` for all);
    ``wss://`` for an ``https://`` server."""
    base = _parse_base_url(base_url)
    tail = "/events/ws" if workflow_id is None else f"/workflows/{int(workflow_id)}/events/ws"
    return f"{'wss' if base.tls else 'ws'}://{base.where}{base.path}{tail}"


class EventFeed:
    """An open websocket event feed: ``async for message in feed`` until the server closes."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> dict[str, Any]:
        import trio_websocket

        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed:
            raise StopAsyncIteration from None
        return _json.loads(message)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await self._ws.aclose()


@asynccontextmanager
async def open_event_feed(
    base_url: str,
    workflow_id: int | None,
    *,
    auth: tuple[str, str] | None = None,
    max_message_size: int = 16 * 1024 * 1024,
    tls: TlsSettings | None = None,
) -> AsyncIterator[EventFeed]:
    """Open the websocket event feed; the preferred, structured form of
    :func:`subscribe_events` (the websocket's background task lives in this context).
    ``tls``: what a ``wss://`` feed trusts (default: the environment's)."""
    import trio_websocket

    headers: list[tuple[bytes, bytes]] = []
    if auth is not None:
        headers.append((b"Authorization", basic_auth_header(*auth)))
    url = events_ws_url(base_url, workflow_id)
    context = None
    if url.startswith("wss:"):
        context = (tls if tls is not None else default_settings()).context()
    async with trio.open_nursery() as nursery:
        try:
            ws = await trio_websocket.connect_websocket_url(
                nursery, url, extra_headers=headers, max_message_size=max_message_size,
                ssl_context=context)
        except (trio_websocket.HandshakeError, trio.BrokenResourceError, OSError) as exc:
            problem = describe_ssl_error(exc, _parse_base_url(base_url).where,
                                         tls if tls is not None else default_settings())
            if problem is not None:
                raise TlsError(problem) from exc
            raise
        try:
            yield EventFeed(ws)
        finally:
            # Leave without a closing handshake: the caller has stopped listening, and
            # trio-websocket 0.12 answers a server ping that crosses our close with a Pong
            # that wsproto refuses (LocalProtocolError), which cancelled the caller (seen as
            # `watch` of a finished workflow exiting with no status). It also leaves the TCP
            # socket open when the server closes first; close it ourselves.
            nursery.cancel_scope.cancel()
            stream = getattr(ws, "_stream", None)
            if isinstance(stream, trio.abc.AsyncResource):
                await trio.aclose_forcefully(stream)


async def subscribe_events(
    base_url: str,
    workflow_id: int | None,
    *,
    auth: tuple[str, str] | None = None,
    max_message_size: int = 16 * 1024 * 1024,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the parsed JSON messages of the websocket event feed until it closes.

    The websocket lives inside this generator: consume it with
    ``async with contextlib.aclosing(subscribe_events(...)) as feed: async for m in feed``,
    or prefer :func:`open_event_feed`, which keeps the nursery in the caller's frame.
    """
    async with open_event_feed(
        base_url, workflow_id, auth=auth, max_message_size=max_message_size
    ) as feed:
        async for message in feed:
            yield message

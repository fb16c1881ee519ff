"""Reading and changing workflows on a server: :class:`AsyncClient` for Trio code, and
:class:`Client` (:func:`connect`), the same methods blocking.

Both speak the HTTP API through :class:`torc_net.client.TorcClient` (retries with backoff,
Basic auth from ``$TORC_USERNAME``/``$TORC_PASSWORD``), whose ``raw`` instance is there for
anything not wrapped here. The blocking client runs each call in ``trio.run`` with a client
of its own (connections do not outlive the call), and :meth:`Client.watch` runs the feed in a
thread.

Errors: :class:`torc_net.client.ApiError` (the server refused: ``status``, ``detail``; a
wrong id is a 404) and :class:`torc_net.client.ServerUnreachable`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._trio import blocking
from .running import _auth, client_for, interactive_wait_s, iter_user_data, job_output

if TYPE_CHECKING:
    from torc_net.client import EventFeed, TorcClient

    from .builder import Workflow
    from .running import RunResult

#: statuses that mean a job may still run
_UNFINISHED = ("uninitialized", "blocked", "ready", "pending", "running")


class WatchLost(Exception):
    """The event feed overflowed (this reader fell behind) or closed before the workflow
    ended; watch again to go on (the first message is the counts at that moment)."""


def _url(url: str | None) -> str:
    from .running import server_url

    chosen = server_url(url)
    if chosen is None:
        raise ValueError("no server: pass url=... or set TORC_API_URL")
    return chosen


@dataclass(frozen=True, slots=True)
class SpawnResult:
    """Jobs added to a live workflow (``POST /workflows/{id}/jobs``): the lineage
    ``iteration``, the new ids by name, and the workflow's status after the change."""

    workflow_id: int
    iteration: int
    jobs: dict[str, int]
    files: dict[str, int]
    user_data: dict[str, int]
    status: dict[str, Any]

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> SpawnResult:
        def ids(key: str) -> dict[str, int]:
            return {str(e["name"]): int(e["id"]) for e in answer.get(key) or []}

        return cls(int(answer["workflow_id"]), int(answer.get("iteration", 0)), ids("jobs"),
                   ids("files"), ids("user_data"), dict(answer.get("status") or {}))


def fragment_of(jobs: Workflow | Mapping[str, Any]) -> dict[str, Any]:
    """A fragment document from a :class:`Workflow` (its jobs, files, user data and
    resource requirements) or a mapping with those keys."""
    from .builder import FRAGMENT_SECTIONS, Workflow, _spec_error

    if isinstance(jobs, Workflow):
        return jobs.to_fragment()
    if not isinstance(jobs, Mapping):
        raise TypeError(f"expected a Workflow or a fragment mapping, got {type(jobs).__name__}")
    extra = sorted(set(jobs) - set(FRAGMENT_SECTIONS))
    if extra:
        raise _spec_error([f"fragment: {', '.join(map(repr, extra))}: a fragment holds only "
                           f"{', '.join(FRAGMENT_SECTIONS)}"])
    return dict(jobs)


class AsyncClient:
    """The server at ``url`` (or ``$TORC_API_URL``), for Trio code::

        async with AsyncClient(url) as client:
            status = await client.status(workflow_id)
    """

    def __init__(self, url: str | None = None, *, auth: tuple[str, str] | None = None,
                 wait_for_server_s: float | None = None) -> None:

        self.url = _url(url)
        wait = interactive_wait_s() if wait_for_server_s is None else wait_for_server_s
        self.raw: TorcClient = client_for(self.url, wait, auth)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.raw.aclose()

    # ------------------------------------------------------------------------------ reads

    async def workflows(self) -> list[dict[str, Any]]:
        """Every workflow this user may see."""
        return [w async for w in self.raw.iter_workflows()]

    async def workflow(self, workflow_id: int) -> dict[str, Any]:
        return await self.raw.get_workflow(workflow_id)

    async def status(self, workflow_id: int) -> dict[str, Any]:
        """``{"counts": {status: n, ...}, "total", "is_complete", "is_canceled", "run_id"}``."""
        return await self.raw.workflow_status(workflow_id)

    async def jobs(self, workflow_id: int, status: str | None = None) -> list[dict[str, Any]]:
        """The jobs (optionally those in one status), in id order."""
        return [j async for j in self.raw.iter_jobs(workflow_id, status)]

    async def results(self, workflow_id: int, status: str | None = None) \
            -> list[dict[str, Any]]:
        """The results, one per job attempt (optionally of one status)."""
        return [r async for r in self.raw.iter_results(workflow_id, status)]

    async def user_data(self, workflow_id: int) -> dict[str, Any]:
        """name -> data of every user data item (function jobs' ``<job>.result`` too)."""
        return {str(u["name"]): u.get("data") async for u in iter_user_data(self.raw,
                                                                             workflow_id)}

    async def job_output(self, workflow_id: int, job_id: int) -> dict[str, Any]:
        """The end of a job's ``stdout``/``stderr`` as its latest result carries it."""
        return await job_output(self.raw, workflow_id, job_id)

    # ---------------------------------------------------------------------------- changes

    async def create(self, workflow: Workflow | Mapping[str, Any]) -> int:
        """Create a workflow (a :class:`Workflow` or a spec document, checked here first);
        its id."""
        from .builder import Workflow

        wf = workflow if isinstance(workflow, Workflow) else Workflow.from_spec(workflow)
        return int((await self.raw.create_workflow(wf.to_spec()))["id"])

    async def cancel(self, workflow_id: int) -> dict[str, Any]:
        """Cancel: no more jobs start; runners terminate the running ones. The status."""
        return await self.raw.cancel_workflow(workflow_id)

    async def reset_status(self, workflow_id: int, *, failed_only: bool = False,
                           job_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Make jobs runnable again (a new run): all, the failed/canceled/terminated ones
        and what depends on them (``failed_only``), or ``job_ids`` and what depends on them.
        The status."""
        return await self.raw.reset_status(workflow_id, failed_only=failed_only,
                                           job_ids=job_ids)

    async def delete(self, workflow_id: int) -> None:
        await self.raw.delete_workflow(workflow_id)

    async def run(self, workflow_id: int, *, jobs: int | None = None,
                  output_dir: str | os.PathLike[str] = "torc_output",
                  poll_interval: float = 1.0) -> RunResult:
        """Run an existing workflow's ready jobs here until it is done (``torc-trio run
        ID``; after :meth:`reset_status`, what was reset)."""
        from .running import Session, absolute, run_existing

        session = Session(self.raw, self.url, None)
        return await run_existing(session, workflow_id, jobs=jobs,
                                  output_dir=absolute(output_dir), poll_interval=poll_interval)

    async def add_jobs(self, workflow_id: int, jobs: Workflow | Mapping[str, Any], *,
                       after: int | None = None) -> SpawnResult:
        """Add jobs (a fragment: a :class:`Workflow` or a mapping of ``jobs``, ``files``,
        ``user_data``, ``resource_requirements``) to a live workflow; with ``after``, each
        waits for that job as well (``torc-trio jobs add``)."""
        fragment = fragment_of(jobs)
        answer = await self.raw.add_jobs(workflow_id, fragment, after=after)
        return SpawnResult.from_answer(answer)

    # ------------------------------------------------------------------------------ watch

    @asynccontextmanager
    async def watch(self, workflow_id: int, *, until_done: bool = True) \
            -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The workflow's event feed::

            async with client.watch(wid) as events:
                async for event in events:
                    ...

        First ``{"type": "counts", "counts": {...}}``, then ``job_status`` (``job_id``,
        ``name``, ``old``, ``new``) and ``workflow`` (``event``: completed, canceled,
        reset, ...) messages as changes are committed. With ``until_done`` the iteration
        ends when the workflow ends (completed or canceled, or every job already done);
        else when the server closes it. :class:`WatchLost` if the feed overflows."""
        from torc_net.client import open_event_feed

        try:
            async with open_event_feed(self.url, workflow_id, auth=self.raw.auth,
                                       tls=self.raw.tls) as feed:
                yield _follow(feed, until_done)
        except BaseExceptionGroup as group:
            # the feed's nursery wraps what the block raised (WatchLost, the caller's own
            # error): hand back the one error, as a plain loop would raise it
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


async def _follow(feed: EventFeed, until_done: bool) -> AsyncIterator[dict[str, Any]]:
    counts: dict[str, int] = {}
    async for message in feed:
        kind = message.get("type")
        if kind == "overflow":
            raise WatchLost("fell behind the event feed (it overflowed); watch again")
        yield message
        if kind == "counts":
            counts = dict(message.get("counts") or {})
        elif kind == "job_status":
            counts[message["old"]] = counts.get(message["old"], 0) - 1
            counts[message["new"]] = counts.get(message["new"], 0) + 1
        if until_done and (
                (kind == "workflow" and message.get("event") in ("completed", "canceled"))
                or (kind == "counts" and sum(counts.values()) > 0
                    and not any(counts.get(s, 0) for s in _UNFINISHED))):
            return
    if until_done:
        raise WatchLost("the event feed closed before the workflow ended; watch again")


class Client:
    """The blocking form of :class:`AsyncClient` (each call runs Trio underneath);
    :func:`connect` makes one."""

    def __init__(self, url: str | None = None, *, auth: tuple[str, str] | None = None,
                 wait_for_server_s: float | None = None) -> None:
        self.url = _url(url)
        self.auth = auth or _auth()
        self.wait_for_server_s = (interactive_wait_s() if wait_for_server_s is None
                                  else wait_for_server_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # nothing stays open between calls

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        async def one() -> Any:
            async with AsyncClient(self.url, auth=self.auth,
                                   wait_for_server_s=self.wait_for_server_s) as client:
                return await getattr(client, name)(*args, **kwargs)

        return blocking(name, one)

    def workflows(self) -> list[dict[str, Any]]:
        return self._call("workflows")  # type: ignore[no-any-return]

    def workflow(self, workflow_id: int) -> dict[str, Any]:
        return self._call("workflow", workflow_id)  # type: ignore[no-any-return]

    def status(self, workflow_id: int) -> dict[str, Any]:
        return self._call("status", workflow_id)  # type: ignore[no-any-return]

    def jobs(self, workflow_id: int, status: str | None = None) -> list[dict[str, Any]]:
        return self._call("jobs", workflow_id, status)  # type: ignore[no-any-return]

    def results(self, workflow_id: int, status: str | None = None) -> list[dict[str, Any]]:
        return self._call("results", workflow_id, status)  # type: ignore[no-any-return]

    def user_data(self, workflow_id: int) -> dict[str, Any]:
        return self._call("user_data", workflow_id)  # type: ignore[no-any-return]

    def job_output(self, workflow_id: int, job_id: int) -> dict[str, Any]:
        return self._call("job_output", workflow_id, job_id)  # type: ignore[no-any-return]

    def create(self, workflow: Workflow | Mapping[str, Any]) -> int:
        return self._call("create", workflow)  # type: ignore[no-any-return]

    def cancel(self, workflow_id: int) -> dict[str, Any]:
        return self._call("cancel", workflow_id)  # type: ignore[no-any-return]

    def reset_status(self, workflow_id: int, *, failed_only: bool = False,
                     job_ids: Sequence[int] | None = None) -> dict[str, Any]:
        return self._call(  # type: ignore[no-any-return]
            "reset_status", workflow_id, failed_only=failed_only, job_ids=job_ids)

    def delete(self, workflow_id: int) -> None:
        self._call("delete", workflow_id)

    def run(self, workflow_id: int, *, jobs: int | None = None,
            output_dir: str | os.PathLike[str] = "torc_output",
            poll_interval: float = 1.0) -> RunResult:
        return self._call(  # type: ignore[no-any-return]
            "run", workflow_id, jobs=jobs, output_dir=output_dir, poll_interval=poll_interval)

    def add_jobs(self, workflow_id: int, jobs: Workflow | Mapping[str, Any], *,
                 after: int | None = None) -> SpawnResult:
        return self._call("add_jobs", workflow_id, jobs, after=after)  # type: ignore[no-any-return]

    def watch(self, workflow_id: int, *, until_done: bool = True) -> Watch:
        """The event feed as a blocking iterator (see :meth:`AsyncClient.watch`); leaving
        the loop early closes it (``with client.watch(wid) as events:`` closes it for sure)."""
        return Watch(self, workflow_id, until_done)


_END = object()


class Watch:
    """A feed read by a thread of its own (``trio.run``), handed over through a bounded
    queue: the iterator blocks while nothing new has happened."""

    def __init__(self, client: Client, workflow_id: int, until_done: bool) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1000)
        self._stop = threading.Event()
        self._token: Any = None
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(client, workflow_id, until_done), daemon=True,
            name=f"torc-trio watch {workflow_id}")
        self._thread.start()

    def _run(self, client: Client, workflow_id: int, until_done: bool) -> None:
        import trio

        async def feed() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                self._started.set()
                if self._stop.is_set():
                    return
                async with AsyncClient(client.url, auth=client.auth,
                                       wait_for_server_s=client.wait_for_server_s) as ac, \
                        ac.watch(workflow_id, until_done=until_done) as events:
                    async for message in events:
                        await trio.to_thread.run_sync(
                            partial(self._put, message), abandon_on_cancel=True)

        try:
            trio.run(feed)
        except Exception as exc:  # handed to the reader
            self._put(exc)
        finally:
            self._started.set()
            self._put(_END)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # the loop ended, or was left early: close the feed
            self.close()

    def close(self) -> None:
        """Stop reading (the feed is closed, the thread ends)."""
        self._stop.set()
        self._started.wait()
        token = self._token
        if token is not None and self._thread.is_alive():
            import trio

            try:
                trio.from_thread.run_sync(self._scope.cancel, trio_token=token)
            except trio.RunFinishedError:
                pass
        self._thread.join()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if self._thread.is_alive():
            self._stop.set()


def connect(url: str | None = None, *, auth: tuple[str, str] | None = None,
            wait_for_server_s: float | None = None) -> Client:
    """A blocking client of the server at ``url`` (or ``$TORC_API_URL``)."""
    return Client(url, auth=auth, wait_for_server_s=wait_for_server_s)

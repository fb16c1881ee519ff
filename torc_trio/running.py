"""Creating and running workflows from Python, as ``torc-trio run``/``create``/``submit`` do.

Where a workflow runs is chosen as the CLI chooses: ``url`` (or ``$TORC_API_URL``) names a
server; without one, a standalone server child is started on ``<output_dir>/torc.db`` for the
run and stopped afterwards (:func:`torc_cli.standalone.ephemeral_server`), and the workflow
stays in that database (``torc-trio --db <output_dir>/torc.db status ID`` reads it later).
The jobs run here, under :class:`torc_cli.runner.JobRunner`: ``jobs=N`` runs N at a time
whatever they ask for (queue mode), otherwise they are packed into this machine's CPUs,
memory and GPUs. A run ends when the workflow is complete, when nothing left can fit this
machine, or at a signal: Ctrl-C terminates the running jobs (they are recorded as
terminated) and then raises KeyboardInterrupt here.

Every spec is checked before any server is involved (the located SpecError the CLI prints),
and input files that no job makes must exist, as for ``torc-trio run``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._trio import blocking, plain_errors
from .builder import RESULT_SUFFIX, Workflow

if TYPE_CHECKING:
    from torc_core.spec import WorkflowSpec
    from torc_net.client import TorcClient

def interactive_wait_s() -> float:
    """How long a call someone waits for retries an unreachable server: the CLI's 30 s, or
    ``$TORC_INTERACTIVE_WAIT_SECONDS``."""
    from torc_cli.session import interactive_wait_s as cli_wait

    return cli_wait()

#: How long a runner keeps retrying (the CLI's --wait-for-server-minutes default).
RUNNER_WAIT_S = 1200.0


def _auth() -> tuple[str, str] | None:
    from torc_net.credentials import env_credentials

    return env_credentials()


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against the working directory (no file system access beyond
    getcwd, so fine on the event loop; results record absolute paths)."""
    return Path(os.path.abspath(path))


def waiting_notice(url: str) -> Callable[[str, float], None]:
    """Said once, as a logging warning (printed when logging is not set up): a call that
    waits for an unreachable server never waits silently (the CLI says the same)."""
    said = False

    def on_retry(failure: str, remaining_s: float) -> None:
        nonlocal said
        if not said:
            said = True
            logging.getLogger("torc_trio").warning(
                "waiting for the server at %s (%s), retrying for %.0f s", url, failure,
                remaining_s)

    return on_retry


def client_for(url: str, wait_for_server_s: float,
               auth: tuple[str, str] | None = None) -> TorcClient:
    """A client of ``url`` (credentials from the environment unless given) that says when
    it starts waiting for the server."""
    from torc_net.client import TorcClient

    return TorcClient(url, auth=auth or _auth(), wait_for_server_s=wait_for_server_s,
                      on_retry=waiting_notice(url))


def server_url(url: str | None) -> str | None:
    """``url``, else ``$TORC_API_URL``, checked as the CLI checks it (None: standalone)."""
    chosen = url or os.environ.get("TORC_API_URL")
    if not chosen:
        return None
    from torc_cli.session import check_url

    return check_url(chosen)


@dataclass(slots=True)
class Session:
    client: TorcClient
    url: str
    #: the standalone server's database (None: a server that outlives this session)
    database: str | None


@asynccontextmanager
async def open_session(url: str | None, output_dir: Path, *,
                       wait_for_server_s: float | None = None) -> AsyncIterator[Session]:
    """A client of the chosen server: ``url``/``$TORC_API_URL``, or a standalone server
    started now on ``<output_dir>/torc.db`` and stopped when the block ends."""

    if wait_for_server_s is None:
        wait_for_server_s = interactive_wait_s()
    chosen = server_url(url)
    if chosen is not None:
        async with plain_errors(), client_for(chosen, wait_for_server_s) as c:
            yield Session(c, chosen, None)
        return
    from torc_cli.early import standalone_holder
    from torc_cli.standalone import StandaloneError, StandaloneOptions, ephemeral_server

    database = str(output_dir / "torc.db")
    holder = standalone_holder(database)
    if holder is not None:
        who = f"pid {holder.get('command_pid') or holder.get('pid', '?')}"
        raise StandaloneError(f"{database} is in use by another torc-trio ({who}); wait for "
                              "it to end, or give this run an output_dir of its own")
    async with plain_errors(), ephemeral_server(StandaloneOptions(database=database)) as local, \
            client_for(local, wait_for_server_s) as client:
        yield Session(client, local, database)


@dataclass
class RunResult:
    """What a run left: the workflow's id and job counts (status name -> number), whether
    every job completed (``ok``), and the return values of its function jobs (``values``:
    job name -> value, for those that completed; :meth:`Workflow.add_call`)."""

    workflow_id: int
    counts: dict[str, int]
    total: int
    ok: bool
    stop_reason: str
    output_dir: Path
    #: the server it ran on; None for a standalone run (its server is gone)
    url: str | None
    #: the standalone run's database (None on a server)
    database: str | None
    values: dict[str, Any] = field(default_factory=dict, repr=False)

    def value(self, job: object) -> Any:
        """The return value of the function job ``job`` (a handle or a name); KeyError if it
        is not a function job of this workflow or did not complete."""
        name = str(job)
        if name not in self.values:
            raise KeyError(f"no value for job {name!r}: not a function job of workflow "
                           f"{self.workflow_id}, or it did not complete")
        return self.values[name]

    def results(self, status: str | None = None) -> list[dict[str, Any]]:
        """The workflow's results (one per job attempt), optionally of one status; read from
        the server, or for a standalone run from its database."""
        return blocking("results", self.results_async, status)

    async def results_async(self, status: str | None = None) -> list[dict[str, Any]]:
        async with self._reopen() as client:
            return [r async for r in client.iter_results(self.workflow_id, status)]

    def job_output(self, job_id: int) -> dict[str, Any]:
        """The end of a job's stdout and stderr (``stdout``, ``stderr``), as its latest result
        carries it (failed jobs by default; execution_config.output_tails)."""
        return blocking("job_output", self.job_output_async, job_id)

    async def job_output_async(self, job_id: int) -> dict[str, Any]:
        async with self._reopen() as client:
            return await job_output(client, self.workflow_id, job_id)

    @asynccontextmanager
    async def _reopen(self) -> AsyncIterator[TorcClient]:
        if self.database is None:

            assert self.url is not None
            async with client_for(self.url, interactive_wait_s()) as client:
                yield client
            return
        async with open_session(None, Path(self.database).parent) as session:
            yield session.client


# ------------------------------------------------------------------------------------- run

async def run_async(
    wf: Workflow,
    *,
    jobs: int | None = None,
    url: str | None = None,
    output_dir: str | os.PathLike[str] = "torc_output",
    num_cpus: int | None = None,
    memory_gb: float | None = None,
    num_gpus: int | None = None,
    poll_interval: float = 1.0,
    after_run: Callable[[TorcClient, int], Awaitable[None]] | None = None,
) -> RunResult:
    """Create ``wf`` and run its jobs here (see the module docstring).

    ``after_run(client, workflow_id)`` is awaited once the jobs have run, while the server
    is still there (:func:`torc_trio.map` reads its values so)."""
    doc, spec = wf.checked()
    _check_inputs(spec)
    out = Path(output_dir)
    async with open_session(url, out, wait_for_server_s=RUNNER_WAIT_S) as session:
        created = await session.client.create_workflow(doc)
        wid = int(created["id"])
        return await run_existing(session, wid, jobs=jobs, output_dir=out, num_cpus=num_cpus,
                                  memory_gb=memory_gb, num_gpus=num_gpus,
                                  poll_interval=poll_interval, after_run=after_run)


def run(wf: Workflow, **options: Any) -> RunResult:
    """Blocking :func:`run_async`."""
    return blocking("run", partial(run_async, wf, **options))


def _check_inputs(spec: WorkflowSpec) -> None:
    """Input files that no job writes must exist (``torc-trio run`` checks the same)."""
    from torc_cli.specs import missing_input_files
    from torc_core.errors import SpecError

    missing = missing_input_files(spec, Path.cwd())
    if missing:
        raise SpecError(missing)


async def run_existing(session: Session, workflow_id: int, *, jobs: int | None,
                       output_dir: Path, num_cpus: int | None = None,
                       memory_gb: float | None = None, num_gpus: int | None = None,
                       poll_interval: float = 1.0,
                       after_run: Callable[[TorcClient, int], Awaitable[None]] | None = None) \
        -> RunResult:
    """Run workflow ``workflow_id``'s jobs here until it is done; its :class:`RunResult`."""
    from dataclasses import replace

    import trio

    from torc_cli.commands.run import record_file_mtimes
    from torc_cli.local_runners import start_local_runners, stop_local_runners
    from torc_cli.resources import detect_allocation_resources, with_gpu_count
    from torc_cli.runner import JobRunner, RunnerConfig
    from torc_cli.session import Context

    client = session.client
    resources = await detect_allocation_resources(probe_gpus=num_gpus is None)
    if num_cpus is not None:
        resources = replace(resources, cpus=num_cpus)
    if memory_gb is not None:
        resources = replace(resources, memory_bytes=int(memory_gb * (1 << 30)))
    if num_gpus is not None:
        resources = with_gpu_count(resources, num_gpus)
    out = absolute(output_dir)
    started: list[dict[str, Any]] = []

    async def schedule_nodes(action: dict[str, Any]) -> None:
        # the workflow's own local runners (scheduler_type: local), as `run` starts them
        started.extend(start_local_runners(session.url, workflow_id, out, action))

    cfg = RunnerConfig(
        workflow_id=workflow_id, api_url=session.url, output_dir=out, resources=resources,
        max_parallel=jobs, poll_interval_s=poll_interval, stop_when_nothing_fits=True,
        handle_signals=threading.current_thread() is threading.main_thread(),
        action_types=("run_commands", "schedule_nodes"), scheduler_types=("local",),
        schedule_nodes=schedule_nodes)
    summary = await JobRunner(client, cfg).run()
    if session.database is not None and started:
        # the server ends with this run: so do the runners it started
        await trio.to_thread.run_sync(stop_local_runners, started)
    if summary.signal is not None:  # the jobs were terminated and recorded so; now stop
        if summary.signal == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + summary.signal)
    status = await client.workflow_status(workflow_id)
    ctx = Context(argparse.Namespace(format="json"))
    ctx.client = client
    await record_file_mtimes(ctx, workflow_id)
    values = await collect_values(client, workflow_id)
    if after_run is not None:
        await after_run(client, workflow_id)
    counts: dict[str, int] = status["counts"]
    total = int(status.get("total", sum(counts.values())))
    return RunResult(workflow_id, counts, total, counts.get("completed", 0) == total,
                     summary.stop_reason, output_dir, None if session.database else session.url,
                     session.database, values)


async def iter_user_data(client: TorcClient, workflow_id: int) -> AsyncIterator[dict[str, Any]]:
    """Every user data item of the workflow, page by page."""
    offset = 0
    while True:
        page = await client.list_user_data(workflow_id, offset=offset, limit=1000)
        items = page.get("items") or []
        for item in items:
            yield item
        offset += len(items)
        if not items or offset >= int(page.get("total", offset)):
            return


async def job_output(client: TorcClient, workflow_id: int, job_id: int) -> dict[str, Any]:
    """``GET .../jobs/{id}/output``: the ends of the job's stdout and stderr."""
    from .jobapi import path

    return await client.call(  # type: ignore[no-any-return]
        "GET", path("workflows", workflow_id, "jobs", job_id, "output"))


async def collect_values(client: TorcClient, workflow_id: int) -> dict[str, Any]:
    """job name -> return value of every completed function job (its ``<job>.result``)."""
    stored: dict[str, Any] = {}
    async for item in iter_user_data(client, workflow_id):
        name = str(item.get("name"))
        if name.endswith(RESULT_SUFFIX):
            stored[name[: -len(RESULT_SUFFIX)]] = item.get("data")
    if not stored:
        return {}
    values: dict[str, Any] = {}
    async for job in client.iter_jobs(workflow_id, status="completed"):
        name = str(job["name"])
        if name in stored:
            values[name] = stored[name]
    return values


# --------------------------------------------------------------------------- create/submit

async def create_async(wf: Workflow, url: str | None = None) -> int:
    """Create ``wf`` on the server ``url`` (or ``$TORC_API_URL``); its workflow id."""
    doc = wf.to_spec()
    async with _server_session(url, "create") as session:
        created = await session.client.create_workflow(doc)
    return int(created["id"])


def create(wf: Workflow, url: str | None = None) -> int:
    return blocking("create", create_async, wf, url)


@dataclass(frozen=True, slots=True)
class Submitted:
    """A workflow created and submitted: its id and the allocations (or local runners)
    started for it, as ``torc-trio -f json submit`` lists them."""

    workflow_id: int
    allocations: list[dict[str, Any]]


async def submit_async(wf: Workflow, url: str | None = None, *,
                       output_dir: str | os.PathLike[str] = "torc_output") -> Submitted:
    """Create ``wf`` on a server and submit its start allocations (``torc-trio submit``):
    its on_workflow_start schedule_nodes actions, else one allocation per Slurm scheduler
    its ready jobs need (their runners reach the server at ``url``)."""
    from torc_cli import submit as cli_submit

    doc, spec = wf.checked()
    _check_inputs(spec)
    async with _server_session(url, "submit") as session:
        wid = int((await session.client.create_workflow(doc))["id"])
        allocations = await cli_submit.submit(session.client, wid, session.url,
                                              absolute(output_dir), dry_run=False)
    return Submitted(wid, allocations)


def submit(wf: Workflow, url: str | None = None, *,
           output_dir: str | os.PathLike[str] = "torc_output") -> Submitted:
    return blocking("submit", partial(submit_async, wf, url, output_dir=output_dir))


@asynccontextmanager
async def _server_session(url: str | None, verb: str) -> AsyncIterator[Session]:
    if server_url(url) is None:
        raise ValueError(f"{verb}: no server: pass url=... or set TORC_API_URL (a standalone "
                         "run needs no server: use run())")
    async with open_session(url, Path(".")) as session:
        yield session

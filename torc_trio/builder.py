"""Building a workflow in Python: :class:`Workflow` and the handles its ``add_*`` methods return.

A :class:`Workflow` is a spec document in the making (Torc's format, the one a YAML file
holds), nothing more: ``to_spec()`` is that document, checked by the same parser and graph
compiler the server and ``torc-trio create --dry-run`` use, so a mistake is the same located
:class:`~torc_core.SpecError` (``jobs[3] 'b': depends_on: no job named 'a'``) and it is raised
before anything is created. The ``add_*`` methods check only what Python alone can get wrong
(a value JSON cannot carry, a handle of another workflow) and leave the rest to that parser:
one set of rules, not two.

Handles stand for names: ``depends_on=[prep]`` and ``depends_on=["prep"]`` are the same spec.

This module imports nothing heavy at import time (a job that spawns jobs builds a fragment
with it and should start quickly); the parser is imported when a spec is checked.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torc_core.spec import WorkflowSpec

    from .functions import FunctionRef
    from .running import RunResult, Submitted

#: The spec's list sections, in the order a spec lists them, with the word for one entry.
SECTIONS: dict[str, str] = {
    "resource_requirements": "resource requirements",
    "failure_handlers": "failure handler",
    "slurm_schedulers": "Slurm scheduler",
    "files": "file",
    "user_data": "user data",
    "jobs": "job",
    "actions": "action",
}
#: What a dynamic-jobs fragment may hold (``POST /workflows/{id}/jobs``).
FRAGMENT_SECTIONS = ("jobs", "files", "user_data", "resource_requirements")

#: The suffixes of a function job's two user data items (see :meth:`Workflow.add_call`).
PARAMS_SUFFIX = ".params"
RESULT_SUFFIX = ".result"


def _spec_error(messages: list[str]) -> Exception:
    from torc_core.errors import SpecError

    return SpecError(messages)


@dataclass(frozen=True, slots=True, eq=False)
class Handle:
    """An entry of a :class:`Workflow` (a job, file, user data item, ...), standing for its
    name wherever the builder takes a reference. ``str(handle)`` is the name."""

    workflow: Workflow
    section: str
    name: str
    index: int

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of workflow {self.workflow.name!r}>"


class JobHandle(Handle):
    """A job of a :class:`Workflow`."""

    __slots__ = ()


class CallHandle(JobHandle):
    """A function job (:meth:`Workflow.add_call`): ``params`` and ``result`` are its two user
    data items (``<job>.params``, ``<job>.result``)."""

    __slots__ = ()

    @property
    def params(self) -> UserDataHandle:
        return self.workflow.user_data_item(self.name + PARAMS_SUFFIX)

    @property
    def result(self) -> UserDataHandle:
        return self.workflow.user_data_item(self.name + RESULT_SUFFIX)


class FileHandle(Handle):
    __slots__ = ()


class UserDataHandle(Handle):
    __slots__ = ()


class ResourceRequirementsHandle(Handle):
    __slots__ = ()


class SchedulerHandle(Handle):
    __slots__ = ()


class FailureHandlerHandle(Handle):
    __slots__ = ()


class ActionHandle(Handle):
    """An action (actions have no names: ``name`` is ``actions[k]``)."""

    __slots__ = ()


Ref = str | Handle
Refs = Ref | Iterable[Ref]

_HANDLES: dict[str, type[Handle]] = {
    "jobs": JobHandle, "files": FileHandle, "user_data": UserDataHandle,
    "resource_requirements": ResourceRequirementsHandle,
    "slurm_schedulers": SchedulerHandle, "failure_handlers": FailureHandlerHandle,
    "actions": ActionHandle,
}


_ENCODER = json.JSONEncoder(allow_nan=False)


def _json_problem(value: object) -> str | None:
    """Why ``value`` cannot travel as JSON (None if it can)."""
    try:
        _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


class Workflow:
    """A workflow spec built in Python. ``settings`` are the spec's top-level fields
    (``description``, ``execution_config``, ``resource_monitor``, ``parameters``, ...).

    >>> wf = Workflow("demo")
    >>> prep = wf.add_job("prep", "echo prep")
    >>> wf.add_job("work", "echo work", depends_on=[prep]).name
    'work'
    """

    def __init__(self, name: str, **settings: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Workflow name: expected a string, got {type(name).__name__}")
        sections = sorted(set(settings) & set(SECTIONS))
        if sections:
            raise TypeError(f"Workflow({name!r}): {', '.join(sections)} are added with the "
                            f"add_* methods (add_job, add_file, ...), not as settings")
        problem = _json_problem(settings)
        if problem:
            raise _spec_error([f"settings: not JSON: {problem}"])
        self.name = name
        self.settings: dict[str, Any] = dict(settings)
        self._entries: dict[str, list[dict[str, Any]]] = {s: [] for s in SECTIONS}
        self._handles: dict[str, list[Handle]] = {s: [] for s in SECTIONS}
        self._functions: dict[Callable[..., Any], FunctionRef] = {}
        self._job_names: set[str] = set()
        self._signatures: dict[Callable[..., Any], inspect.Signature | None] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(v)} {k}" for k, v in self._entries.items() if v)
        return f"<Workflow {self.name!r}: {counts or 'empty'}>"

    # ----------------------------------------------------------------------------- reading

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Workflow:
        """Load a spec file (YAML, JSON, JSON5 or KDL, by its suffix), its ``@file``
        parameter values inlined, and check it as ``torc-trio create --dry-run`` does."""
        from torc_cli.specs import load_spec_file

        doc = load_spec_file(os.fspath(path))
        wf = cls.from_spec(doc)
        wf.validate()
        return wf

    @classmethod
    def from_spec(cls, doc: Mapping[str, Any]) -> Workflow:
        """A builder holding a spec document (to add to it, or to run it)."""
        if not isinstance(doc, Mapping):
            raise _spec_error(["the spec must be a mapping at the top level"])
        settings = {k: v for k, v in doc.items() if k not in SECTIONS and k != "name"}
        name = doc.get("name")
        wf = cls(name if isinstance(name, str) else "", **settings)
        if not isinstance(name, str):
            wf.settings["name"] = name  # the parser names the problem
        for section in SECTIONS:
            entries = doc.get(section)
            if entries is None:
                continue
            if not isinstance(entries, list):
                wf.settings[section] = entries  # the parser names the problem
                continue
            for entry in entries:
                wf._append(section, dict(entry) if isinstance(entry, Mapping) else entry)
        return wf

    def job(self, name: str) -> JobHandle:
        """The handle of the job called ``name`` (KeyError if there is none)."""
        return self._find("jobs", name)  # type: ignore[return-value]

    def file(self, name: str) -> FileHandle:
        return self._find("files", name)  # type: ignore[return-value]

    def user_data_item(self, name: str) -> UserDataHandle:
        return self._find("user_data", name)  # type: ignore[return-value]

    @property
    def jobs(self) -> list[JobHandle]:
        return list(self._handles["jobs"])  # type: ignore[arg-type]

    def _find(self, section: str, name: str) -> Handle:
        for handle in self._handles[section]:
            if handle.name == name:
                return handle
        raise KeyError(f"workflow {self.name!r} has no {SECTIONS[section]} named {name!r}")

    # ------------------------------------------------------------------------------ adding

    def _append(self, section: str, entry: Any, cls: type[Handle] | None = None) -> Handle:
        index = len(self._entries[section])
        self._entries[section].append(entry)
        if section == "actions":
            name = f"actions[{index}]"
        else:
            raw = entry.get("name") if isinstance(entry, Mapping) else None
            name = raw if isinstance(raw, str) else f"{section}[{index}]"
        handle = (cls or _HANDLES[section])(self, section, name, index)
        if section == "jobs":
            self._job_names.add(name)
        self._handles[section].append(handle)
        return handle

    def _where(self, section: str, name: str) -> str:
        return f"{section}[{len(self._entries[section])}] {name!r}"

    def _refs(self, value: Refs | None, section: str, key: str, where: str) -> list[str] | None:
        """References (names or handles of this workflow's ``section``) as names."""
        if value is None:
            return None
        items: list[Any] = [value] if isinstance(value, (str, Handle)) else list(value)
        return [self._ref(v, section, key, where) for v in items]

    def _ref(self, value: Any, section: str, key: str, where: str) -> str:
        if isinstance(value, Handle):
            if value.workflow is not self:
                raise _spec_error([f"{where}: {key}: {value.name!r} is a handle of another "
                                   f"workflow ({value.workflow.name!r})"])
            if value.section != section:
                raise _spec_error([f"{where}: {key}: {value.name!r} is a "
                                   f"{SECTIONS[value.section]}, not a {SECTIONS[section]}"])
            return value.name
        if isinstance(value, str):
            return value
        raise _spec_error([f"{where}: {key}: expected a name or a handle, got "
                           f"{type(value).__name__}"])

    def _checked(self, entry: dict[str, Any], where: str) -> dict[str, Any]:
        """``entry`` if JSON can carry it, else the located error naming the key."""
        if _json_problem(entry) is None:  # one encoding for the common case
            return entry
        for key, value in entry.items():
            problem = _json_problem(value)
            if problem:
                raise _spec_error([f"{where}: {key}: not JSON: {problem}"])
        raise _spec_error([f"{where}: not JSON: {_json_problem(entry)}"])

    def add_job(
        self,
        name: str,
        command: str,
        *,
        depends_on: Refs | None = None,
        resource_requirements: Ref | Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        input_files: Refs | None = None,
        output_files: Refs | None = None,
        input_user_data: Refs | None = None,
        output_user_data: Refs | None = None,
        scheduler: Ref | None = None,
        failure_handler: Ref | None = None,
        **job_keys: Any,
    ) -> JobHandle:
        """Add a job; any other Torc job key (``priority``, ``cancel_on_blocking_job_failure``,
        ``depends_on_regexes``, ``stdio``, ...) goes in ``job_keys``.

        ``resource_requirements``: a name, a handle, or a mapping (``{"num_cpus": 2,
        "memory": "4g", "runtime": "PT1H"}``) which becomes resource requirements named after
        the job."""
        return self._add_job(JobHandle, name, command, depends_on=depends_on,
                             resource_requirements=resource_requirements,
                             parameters=parameters, input_files=input_files,
                             output_files=output_files, input_user_data=input_user_data,
                             output_user_data=output_user_data, scheduler=scheduler,
                             failure_handler=failure_handler, **job_keys)

    def _add_job(self, cls: type[JobHandle], name: str, command: str, *,
                 depends_on: Refs | None, resource_requirements: Ref | Mapping[str, Any] | None,
                 parameters: Mapping[str, Any] | None, input_files: Refs | None,
                 output_files: Refs | None, input_user_data: Refs | None,
                 output_user_data: Refs | None, scheduler: Ref | None,
                 failure_handler: Ref | None, **job_keys: Any) -> JobHandle:
        where = self._where("jobs", name)
        entry: dict[str, Any] = {"name": name, "command": command}
        refs = (("depends_on", depends_on, "jobs"), ("input_files", input_files, "files"),
                ("output_files", output_files, "files"),
                ("input_user_data", input_user_data, "user_data"),
                ("output_user_data", output_user_data, "user_data"))
        for key, value, section in refs:
            names = self._refs(value, section, key, where)
            if names is not None:
                entry[key] = names
        if isinstance(resource_requirements, Mapping):
            rr = self.add_resource_requirements(name, **resource_requirements)
            entry["resource_requirements"] = rr.name
        elif resource_requirements is not None:
            entry["resource_requirements"] = self._ref(
                resource_requirements, "resource_requirements", "resource_requirements", where)
        if scheduler is not None:
            entry["scheduler"] = self._ref(scheduler, "slurm_schedulers", "scheduler", where)
        if failure_handler is not None:
            entry["failure_handler"] = self._ref(failure_handler, "failure_handlers",
                                                 "failure_handler", where)
        if parameters is not None:
            entry["parameters"] = dict(parameters)
        entry.update(job_keys)
        return self._append("jobs", self._checked(entry, where), cls)  # type: ignore[return-value]

    def add_file(self, name: str, path: str | os.PathLike[str], **file_keys: Any) -> FileHandle:
        """Add a file (``path`` relative to where the jobs run, or absolute)."""
        entry = {"name": name, "path": os.fspath(path), **file_keys}
        return self._append(  # type: ignore[return-value]
            "files", self._checked(entry, self._where("files", name)))

    def add_user_data(self, name: str, data: Any = None, *, is_ephemeral: bool = False,
                      **keys: Any) -> UserDataHandle:
        """Add a user data item: any JSON value, which jobs read and write through the API
        (and :func:`torc_trio.current_job`)."""
        entry: dict[str, Any] = {"name": name, "data": data, **keys}
        if is_ephemeral:
            entry["is_ephemeral"] = True
        return self._append(  # type: ignore[return-value]
            "user_data", self._checked(entry, self._where("user_data", name)))

    def add_resource_requirements(self, name: str, **fields: Any) -> ResourceRequirementsHandle:
        """``num_cpus``, ``num_gpus``, ``num_nodes``, ``memory`` ("4g"), ``runtime``
        ("PT30M", ISO 8601)."""
        entry = {"name": name, **fields}
        where = self._where("resource_requirements", name)
        return self._append(  # type: ignore[return-value]
            "resource_requirements", self._checked(entry, where))

    def add_slurm_scheduler(self, name: str, **fields: Any) -> SchedulerHandle:
        """``account``, ``partition``, ``nodes``, ``walltime``, ``mem``, ``gres``, ``qos``,
        ``ntasks_per_node``, ``tmp``, ``extra``."""
        entry = {"name": name, **fields}
        where = self._where("slurm_schedulers", name)
        return self._append(  # type: ignore[return-value]
            "slurm_schedulers", self._checked(entry, where))

    def add_failure_handler(self, name: str, rules: Iterable[Mapping[str, Any]]) \
            -> FailureHandlerHandle:
        """Rules: ``{"exit_codes": [...], "match_all_exit_codes": bool, "max_retries": n,
        "recovery_script": "..."}``."""
        entry = {"name": name, "rules": [dict(r) for r in rules]}
        where = self._where("failure_handlers", name)
        return self._append(  # type: ignore[return-value]
            "failure_handlers", self._checked(entry, where))

    def add_action(self, trigger_type: str, action_type: str, *, jobs: Refs | None = None,
                   scheduler: Ref | None = None, **fields: Any) -> ActionHandle:
        """An action (``trigger_type``: on_workflow_start, on_jobs_ready, on_jobs_complete,
        ...; ``action_type``: run_commands, schedule_nodes); ``commands``,
        ``job_name_regexes``, ``num_allocations``, ``scheduler_type``, ... in ``fields``."""
        where = f"actions[{len(self._entries['actions'])}]"
        entry: dict[str, Any] = {"trigger_type": trigger_type, "action_type": action_type}
        names = self._refs(jobs, "jobs", "jobs", where)
        if names is not None:
            entry["jobs"] = names
        if scheduler is not None:
            entry["scheduler"] = self._ref(scheduler, "slurm_schedulers", "scheduler", where)
        entry.update(fields)
        return self._append("actions", self._checked(entry, where))  # type: ignore[return-value]

    def add_call(
        self,
        func: Callable[..., Any],
        params: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        results_of: Iterable[CallHandle | str] | None = None,
        depends_on: Refs | None = None,
        python: str | None = None,
        **job_keys: Any,
    ) -> CallHandle:
        """Add a function job: it runs ``func(**params)`` (with ``results_of``:
        ``func(values, **params)``, ``values`` the return values of those function jobs, in
        that order) in a Python process of its own, and stores the return value (JSON) in the
        user data item ``<name>.result``; the parameters are in ``<name>.params``.

        ``func`` must be importable by module and name (a ``def`` at the top level of a
        module other than ``__main__``); this is checked now. The job runs
        ``python -m torc_trio.call MODULE:NAME`` with ``python`` (default: this interpreter)
        and the module's directory on ``sys.path``. Other keyword arguments are job keys
        (``resource_requirements``, ``scheduler``, ``priority``, ...)."""
        job_name = name if name is not None else self._free_name(func.__name__)
        return self._add_function_job(func, [dict(params or {})], job_name,
                                      results_of=results_of, depends_on=depends_on,
                                      python=python, **job_keys)

    def _add_function_job(self, func: Callable[..., Any], calls: list[dict[str, Any]],
                          job_name: str, *, batch: bool = False,
                          results_of: Iterable[CallHandle | str] | None = None,
                          flatten_results: bool = False, depends_on: Refs | None = None,
                          python: str | None = None, **job_keys: Any) -> CallHandle:
        """A function job of one call (``kwargs``), or with ``batch`` of several in order
        (``batch``: its value is ``{"values": [...], "failed": [...]}``; map's chunks).
        ``flatten_results``: the ``results_of`` jobs are batches, their values joined."""
        from .functions import call_command, signature_problem

        ref = self._function(func)
        where = self._where("jobs", job_name)
        sig = self._signature(func)
        for kwargs in calls:
            bad = signature_problem(sig, kwargs, 0 if results_of is None else 1)
            if bad:
                raise _spec_error([f"{where}: params {kwargs!r}: {bad}"])
        problem = _json_problem(calls)
        if problem:
            raise _spec_error([f"{where}: params: not JSON: {problem}"])
        data: dict[str, Any] = {"function": ref.target}
        if batch:
            data["batch"] = calls
        else:
            data["kwargs"] = calls[0]
        if results_of is not None:
            data["results_of"] = [self._ref(h, "jobs", "results_of", where) + RESULT_SUFFIX
                                  for h in results_of]
            if flatten_results:
                data["flatten_results"] = True
        if "parameters" in job_keys:
            raise _spec_error([f"{where}: parameters: a function job is one call; for many, "
                               "add one call per set of params (or use map)"])
        extra_in = self._refs(job_keys.pop("input_user_data", None), "user_data",
                              "input_user_data", where) or []
        extra_out = self._refs(job_keys.pop("output_user_data", None), "user_data",
                               "output_user_data", where) or []
        params_ud = self.add_user_data(job_name + PARAMS_SUFFIX, data)
        result_ud = self.add_user_data(job_name + RESULT_SUFFIX, None)
        return self._add_job(  # type: ignore[return-value]
            CallHandle, job_name, call_command(ref, python), depends_on=depends_on,
            resource_requirements=job_keys.pop("resource_requirements", None),
            parameters=None, input_files=job_keys.pop("input_files", None),
            output_files=job_keys.pop("output_files", None),
            input_user_data=[params_ud.name, *(data.get("results_of") or []), *extra_in],
            output_user_data=[result_ud.name, *extra_out],
            scheduler=job_keys.pop("scheduler", None),
            failure_handler=job_keys.pop("failure_handler", None), **job_keys)

    def _function(self, func: Callable[..., Any], caller: str = "add_call") -> FunctionRef:
        """Where a runner imports ``func`` from (checked once per function)."""
        from .functions import function_ref

        ref = self._functions.get(func)
        if ref is None:
            ref = self._functions[func] = function_ref(func, caller)
        return ref

    def _signature(self, func: Callable[..., Any]) -> inspect.Signature | None:
        """``func``'s signature (read once per function; None if it has none to read)."""
        if func not in self._signatures:
            try:
                self._signatures[func] = inspect.signature(func)
            except (TypeError, ValueError):
                self._signatures[func] = None
        return self._signatures[func]

    def _free_name(self, base: str) -> str:
        taken = self._job_names
        if base not in taken:
            return base
        k = 2
        while f"{base}_{k}" in taken:
            k += 1
        return f"{base}_{k}"

    # ----------------------------------------------------------------------------- the spec

    def _document(self, sections: Iterable[str]) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, **self.settings}
        for section in sections:
            if self._entries[section]:
                doc[section] = [dict(e) if isinstance(e, dict) else e
                                for e in self._entries[section]]
        return doc

    def to_spec(self) -> dict[str, Any]:
        """The spec document (what a spec file holds, as ``torc-trio create`` sends it),
        checked first: raises the located :class:`~torc_core.SpecError` the CLI prints."""
        return self.checked()[0]

    def checked(self) -> tuple[dict[str, Any], WorkflowSpec]:
        """The spec document and what the parser made of it (checked once)."""
        doc = self._document(SECTIONS)
        return doc, check_document(doc)

    def validate(self) -> WorkflowSpec:
        """Check the spec as ``create --dry-run`` does (parser, then the graph compiler:
        cycles too); its warnings (fields that have no effect here) are Python warnings."""
        return check_document(self._document(SECTIONS))

    def to_fragment(self) -> dict[str, Any]:
        """The jobs, files, user data and resource requirements, as a fragment for
        ``spawn_jobs`` (a running job adding them to its workflow). A fragment cannot carry
        settings, schedulers, failure handlers or actions: those are refused here."""
        extra = [s for s in SECTIONS if s not in FRAGMENT_SECTIONS and self._entries[s]]
        extra += sorted(k for k in self.settings if k != "name")
        if extra:
            raise _spec_error([f"fragment {self.name!r}: {', '.join(extra)}: a fragment holds "
                               f"only {', '.join(FRAGMENT_SECTIONS)} (the workflow's own "
                               "settings, schedulers and handlers stay as they are)"])
        doc = self._document(FRAGMENT_SECTIONS)
        doc.pop("name")
        return doc

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the checked spec as JSON (``.json``) or YAML (``.yaml``/``.yml``)."""
        target = Path(path)
        doc = self.to_spec()
        if target.suffix.lower() in (".yaml", ".yml"):
            import yaml

            target.write_text(yaml.safe_dump(doc, sort_keys=False))
        elif target.suffix.lower() == ".json":
            target.write_text(json.dumps(doc, indent=2) + "\n")
        else:
            raise ValueError(f"{path}: write .json, .yaml or .yml")
        return target

    # -------------------------------------------------------------------------- running
    # (implemented in running.py; here so that a workflow is run by its own verbs)

    def run(self, *, jobs: int | None = None, url: str | None = None,
            output_dir: str | os.PathLike[str] = "torc_output", num_cpus: int | None = None,
            memory_gb: float | None = None, num_gpus: int | None = None,
            poll_interval: float = 1.0) -> RunResult:
        """Create the workflow and run its jobs here until it is done (``torc-trio run``):
        on the server ``url`` (or ``$TORC_API_URL``), else on a standalone server of this
        run's own, its database ``<output_dir>/torc.db``. ``jobs=N``: N at a time whatever
        they ask for; else packed into this machine's CPUs and memory (``num_cpus``,
        ``memory_gb``, ``num_gpus`` override what is detected). Job output goes to
        ``output_dir``. Returns a :class:`~torc_trio.RunResult`."""
        from .running import run

        return run(self, jobs=jobs, url=url, output_dir=output_dir, num_cpus=num_cpus,
                   memory_gb=memory_gb, num_gpus=num_gpus, poll_interval=poll_interval)

    async def run_async(self, *, jobs: int | None = None, url: str | None = None,
                        output_dir: str | os.PathLike[str] = "torc_output",
                        num_cpus: int | None = None, memory_gb: float | None = None,
                        num_gpus: int | None = None, poll_interval: float = 1.0) -> RunResult:
        """:meth:`run` for Trio code."""
        from .running import run_async

        return await run_async(self, jobs=jobs, url=url, output_dir=output_dir,
                               num_cpus=num_cpus, memory_gb=memory_gb, num_gpus=num_gpus,
                               poll_interval=poll_interval)

    def create(self, url: str | None = None) -> int:
        """Create the workflow on the server ``url`` (or ``$TORC_API_URL``); its id. The
        jobs wait for runners (``torc-trio --url URL run ID``, or :meth:`submit`)."""
        from .running import create

        return create(self, url)

    async def create_async(self, url: str | None = None) -> int:
        from .running import create_async

        return await create_async(self, url)

    def submit(self, url: str | None = None, *,
               output_dir: str | os.PathLike[str] = "torc_output") -> Submitted:
        """Create the workflow and submit its allocations (``torc-trio submit``)."""
        from .running import submit

        return submit(self, url, output_dir=output_dir)

    async def submit_async(self, url: str | None = None, *,
                           output_dir: str | os.PathLike[str] = "torc_output") -> Submitted:
        from .running import submit_async

        return await submit_async(self, url, output_dir=output_dir)


def check_document(doc: Mapping[str, Any]) -> WorkflowSpec:
    """Parse and compile ``doc`` as ``create --dry-run`` does; warnings as Python warnings."""
    import warnings

    from torc_core.graph import compile_spec_summary
    from torc_core.parse import parse_spec

    spec = parse_spec(doc)
    compile_spec_summary(spec)
    for warning in spec.warnings:
        warnings.warn(warning, TorcWarning, stacklevel=3)
    return spec


class TorcWarning(UserWarning):
    """A spec field accepted without effect here (the CLI's ``torc-trio: warning:`` lines)."""

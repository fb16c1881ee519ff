"""Load, expand and validate a workflow spec in Torc's format.

The pipeline is ``load_spec_text`` (YAML / JSON / JSON5 / KDL text -> plain dict) ->
``inline_value_files`` (``"@values.txt"`` parameter values -> lists; the caller read the files)
-> :func:`parse_spec` (dict -> :class:`~torc_core.spec.WorkflowSpec`). The first two live in
:mod:`torc_core.load`, memory and duration values in :mod:`torc_core.units`, the settings
sections in :mod:`torc_core.settings`, parameter expansion as columns in
:mod:`torc_core.expand`, the non-job sections in :mod:`torc_core.sections`; this module
re-exports their public names and builds the jobs, actions and the spec.

Why ``parse_spec`` is built around *blocks*: one job definition with ``parameters`` becomes a
block of expanded jobs whose fields are either one shared value or a list of per-job values.
Templates are compiled once per block and rendered by C-level loops; references are checked
once per distinct constant and once per job only where values vary; the final
:class:`JobSpec` objects are filled column by column. That keeps a million-job spec in the
range of a few seconds and shares every tuple that does not vary (which the graph compiler
then uses to group jobs).

Every problem found is reported, located as ``jobs[3] 'train_{i}': depends_on: no job named
'prep'`` (index in the document's list, the name as written), all together in one
:class:`~torc_core.errors.SpecError`.

Why every step is bounded: the server parses each workflow create, and a few hundred bytes
used to hang it or exhaust its memory. So YAML aliases may expand only so far
(``max_alias_nodes``); expansion is counted before it happens (``max_jobs`` entries,
``max_text_bytes`` of rendered text, format widths of at most 1000); regexes are RE2's, linear
in time; and what the store cannot hold (integers beyond 64 bits, inf/nan, lone surrogates)
is refused here, located, rather than failing at insert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, islice
from typing import Any, TypeVar, cast

from .checks import (
    text_problem,
)
from .entries import MAX_ERRORS as MAX_ERRORS
from .entries import Entry as _Entry
from .entries import Errors as _Errors
from .entries import check_unique as _check_unique
from .entries import entries as _entries
from .errors import SpecError
from .expand import (
    _FAILED,
    Column,
    _Budget,
    _bulk_build,
    _Const,
    _Count,
    _distinct,
    _merge,
    _Params,
    _Renderer,
    _union_column,
    _values,
)
from .graph import (
    DEFAULT_MAX_REGEX_TESTS,
    NameIndex,
    RegexBudget,
    RegexBudgetError,
    RegexError,
    gc_paused,
)
from .load import FORMATS as FORMATS
from .load import MAX_YAML_ALIAS_NODES as MAX_YAML_ALIAS_NODES
from .load import fmt_for_path as fmt_for_path
from .load import inline_value_files as inline_value_files
from .load import load_spec_text as load_spec_text
from .load import value_file_references as value_file_references
from .sections import (
    _PARAM_KEYS,
    _check_data,
    _failure_handlers,
    _files,
    _resource_requirements,
    _slurm_schedulers,
    _user_data,
)
from .sections import MAX_ERRORS_PER_FIELD as MAX_ERRORS_PER_FIELD
from .settings import (
    COMPUTE_NODE_KEYS,
    parse_compute_node_settings,
    parse_execution_config,
    parse_resource_monitor,
    parse_stdio,
    section_keys,
    warnings_for,
)
from .spec import (
    DEFAULT_MAX_ITERATIONS,
    EMPTY,
    ActionSpec,
    FileSpec,
    JobSpec,
    UserDataSpec,
    WorkflowSpec,
)
from .units import MAX_SCALAR_TEXT as MAX_SCALAR_TEXT
from .units import parse_duration as parse_duration
from .units import parse_memory as parse_memory

#: The most jobs one spec may expand to (files and user_data: as many each), unless the caller
#: says otherwise (``parse_spec(max_jobs=...)``; the server's ``--max-jobs-per-workflow``).
DEFAULT_MAX_JOBS = 5_000_000
#: The most text (names, commands, paths, data) expansion may make, estimated before it is
#: made (``parse_spec(max_text_bytes=...)``): a 1 MB command template times 5,000,000 jobs is
#: 5 TB. The estimate is an upper bound: an ordinary million-job spec estimates ~100 MB.
DEFAULT_MAX_TEXT_BYTES = 2 << 30
#: What one file or user_data reference of a job costs of that budget: the compiled model holds
#: 8 bytes per reference (and the store a row), and one regex can give a million jobs the same
#: ten thousand inputs.
REFERENCE_BYTES = 8

TRIGGER_TYPES = ("on_workflow_start", "on_workflow_complete", "on_jobs_ready", "on_jobs_complete")
ACTION_TYPES = ("run_commands", "schedule_nodes")
SCHEDULER_TYPES = ("slurm", "local")
JOBS_SORT_METHODS = ("none", "gpus_runtime_memory", "gpus_memory_runtime")
#: sbatch options torc manages itself; not allowed in slurm_defaults (Torc's rule).
SLURM_MANAGED = ("partition", "nodes", "walltime", "time", "mem", "gres", "name", "job-name")

_TOP_KEYS = section_keys("workflow") | COMPUTE_NODE_KEYS
_JOB_SCALARS = ("name", "command", "invocation_script")
_JOB_LISTS = (
    "depends_on", "depends_on_regexes", "input_files", "output_files", "input_user_data",
    "output_user_data", "input_file_regexes", "output_file_regexes", "input_user_data_regexes",
    "output_user_data_regexes",
)
_JOB_KEYS = frozenset(
    {
        *_JOB_SCALARS, *_JOB_LISTS, *_PARAM_KEYS, "resource_requirements", "scheduler",
        "failure_handler", "cancel_on_blocking_job_failure", "supports_termination",
        "priority", "stdio",
    }
)
_ACTION_KEYS = frozenset(
    {"trigger_type", "action_type", "jobs", "job_name_regexes", "commands", "scheduler",
     "scheduler_type", "num_allocations", "start_one_worker_per_node", "max_parallel_jobs",
     "persistent"}
)
# (kind, direction) of ${files.input.NAME} and friends.
_REF = re.compile(r"\$\{(files|user_data)\.(input|output)\.([^{}]+)\}")
_REF_FIELD = {
    ("files", "input"): "input_files",
    ("files", "output"): "output_files",
    ("user_data", "input"): "input_user_data",
    ("user_data", "output"): "output_user_data",
}
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Error collection and typed access


class _Block:
    """One job definition, expanded: ``n`` jobs, each field a :data:`Column`; or a run of
    plain entries (``wheres``: where each of its jobs was defined)."""

    __slots__ = ("cols", "entry", "n", "wheres")

    def __init__(self, entry: _Entry, n: int, cols: dict[str, Column],
                 wheres: list[str] | None = None) -> None:
        self.entry = entry
        self.n = n
        self.cols = cols
        self.wheres = wheres

    def where(self, k: int) -> str:
        """Where the block's ``k``-th job was defined."""
        return self.entry.where if self.wheres is None else self.wheres[k]


def _stop_if_spent(exc: RegexError, entry: _Entry) -> None:
    """Past the regex budget every further pattern would fail the same way: stop with the
    errors so far (the first names the limit and where it was reached)."""
    if isinstance(exc, RegexBudgetError):
        entry.err.raise_if_any()


class _Lookup:
    """Names of files and user_data, and regex resolution over them (cached per pattern)."""

    def __init__(self, files: Sequence[FileSpec], uds: Sequence[UserDataSpec],
                 regex_budget: RegexBudget) -> None:
        self.file_names = [f.name for f in files]
        self.file_path = {f.name: f.path for f in files}
        self.ud_names = [u.name for u in uds]
        self.ud_set = set(self.ud_names)
        self.file_index = NameIndex(self.file_names, budget=regex_budget)
        self.ud_index = NameIndex(self.ud_names, budget=regex_budget)
        #: The longest text a ${files...} or ${user_data...} reference can become.
        self.longest_ref = max(
            max(map(len, self.file_path.values()), default=0),
            max(map(len, self.ud_names), default=0),
        )


def _resolve_regex_column(
    r: _Renderer, key: str, texts: Sequence[str], index: NameIndex, names: Sequence[str]
) -> Column:
    """``*_file_regexes`` / ``*_user_data_regexes``: names that fully match, per job."""
    col = r.many(key, texts)
    failed: set[str] = set()

    def resolve(patterns: tuple[str, ...]) -> tuple[str, ...]:
        found: dict[str, None] = {}
        for pattern in patterns:
            try:
                hits = index.match(pattern)
            except RegexError as exc:
                if pattern not in failed:
                    r.entry.fail(key, exc.describe(pattern))
                    _stop_if_spent(exc, r.entry)
                    failed.add(pattern)
                continue
            if not hits and pattern not in failed:
                r.entry.fail(key, f"{pattern!r} matches nothing")
                failed.add(pattern)
            for k in hits:
                found[names[k]] = None
        return tuple(found)

    if isinstance(col, _Const):
        return _Const(r.intern(resolve(col.value)))
    return [resolve(p) for p in col]


def _substitute_refs(
    text: str, lookup: _Lookup, found: dict[str, dict[str, None]], missing: list[str]
) -> str:
    """Replace ``${files.input.NAME}`` (by path) and ``${user_data.input.NAME}`` (by name),
    recording each NAME under the job field it implies."""

    def sub(m: re.Match[str]) -> str:
        kind, direction, name = m.group(1), m.group(2), m.group(3)
        if kind == "files":
            path = lookup.file_path.get(name)
            if path is None:
                missing.append(f"no file named {name!r}")
                return m.group(0)
            found[_REF_FIELD[(kind, direction)]][name] = None
            return path
        if name not in lookup.ud_set:
            missing.append(f"no user_data named {name!r}")
            return m.group(0)
        found[_REF_FIELD[(kind, direction)]][name] = None
        return name

    return _REF.sub(sub, text)


def _apply_refs(
    r: _Renderer,
    cols: dict[str, Column],
    n: int,
    lookup: _Lookup,
    command: str,
    script: str | None,
) -> None:
    """Commands (and invocation scripts) referencing ``${files...}`` / ``${user_data...}``."""
    for key, raw in (("command", command), ("invocation_script", script)):
        # Parameter values do not introduce references: checking the template suffices.
        if not raw or "${" not in raw:
            continue
        col = cols[key]
        added: dict[str, list[tuple[str, ...]]] = {f: [] for f in _REF_FIELD.values()}
        texts: list[Any] = []
        reported = 0
        for text in _values(col, 1 if isinstance(col, _Const) else n):
            found: dict[str, dict[str, None]] = {f: {} for f in _REF_FIELD.values()}
            missing: list[str] = []
            texts.append(_substitute_refs(text, lookup, found, missing) if text else text)
            for problem in missing:
                if reported < MAX_ERRORS_PER_FIELD:
                    r.entry.fail(key, problem)
                reported += 1
            for f in _REF_FIELD.values():
                added[f].append(tuple(found[f]))
        if isinstance(col, _Const):
            cols[key] = _Const(texts[0])
            for f in _REF_FIELD.values():
                cols[f] = _merge(cols[f], _Const(r.intern(added[f][0])), n, r.interned)
        else:
            cols[key] = texts
            for f in _REF_FIELD.values():
                if any(added[f]):
                    cols[f] = _merge(cols[f], added[f], n, r.interned)


def _job_size(
    r: _Renderer, lookup: _Lookup, texts: Mapping[str, Sequence[str]], n: int
) -> int:
    """The most text the entry's expansion makes: its templates rendered ``n`` times, and
    each ``${files...}`` / ``${user_data...}`` reference as the longest path or name it can
    become (per job where the text varies, else once)."""
    size = sum(r.size(key, values) for key, values in texts.items())
    for key in ("command", "invocation_script"):
        for text in texts.get(key, ()):
            if "${" in text:
                times = n if r.varies(key, text) else 1
                size += text.count("${") * lookup.longest_ref * times
    return size


def _job_block(
    e: _Entry,
    params: _Params,
    lookup: _Lookup,
    interned: dict[Any, Any],
    count: _Count,
    budget: _Budget,
) -> _Block | None:
    e.check_keys(_JOB_KEYS)
    name = e.get_str("name", "", required=True)
    command = e.get_str("command", "", required=True)
    script = e.get_str("invocation_script", None)
    lists = {key: e.str_list(key) for key in _JOB_LISTS}
    texts = [name, command, *([script] if script else []), *chain.from_iterable(lists.values())]
    combos = params.combinations(e, texts)
    if combos is _FAILED or not name or not count.admit(e.where, combos):
        return None
    r = _Renderer(e, combos, interned, budget)
    by_key = {"name": [name], "command": [command], "invocation_script": [script] if script
              else [], **lists}
    size = _job_size(r, lookup, by_key, combos.count() if combos is not None else 1)
    if not budget.charge(e.where, size):
        return None
    cols: dict[str, Column] = {
        "name": r.scalar("name", name),
        "command": r.scalar("command", command),
        "invocation_script": r.scalar("invocation_script", script) if script else _Const(None),
    }
    n = len(combos) if combos is not None else 1
    file_regex_keys = {
        "input_file_regexes": ("input_files", lookup.file_index, lookup.file_names),
        "output_file_regexes": ("output_files", lookup.file_index, lookup.file_names),
        "input_user_data_regexes": ("input_user_data", lookup.ud_index, lookup.ud_names),
        "output_user_data_regexes": ("output_user_data", lookup.ud_index, lookup.ud_names),
    }
    regex_cols: dict[str, Column] = {}
    for key in _JOB_LISTS:
        if key in file_regex_keys:
            target, index, names = file_regex_keys[key]
            regex_cols[target] = _resolve_regex_column(r, key, lists[key], index, names)
        else:
            cols[key] = r.many(key, lists[key])
    if isinstance(cols["name"], _Const) and n > 1:
        # Torc: a job whose name has no placeholder is not expanded; its list fields collect
        # every combination (e.g. an aggregate job's input_files: [result_{i}]).
        for key in ("command", "invocation_script"):
            if not isinstance(cols[key], _Const):
                e.fail(key, "uses parameters but the job name does not")
                cols[key] = _Const(command if key == "command" else script)
        for table in (cols, regex_cols):
            for key in [k for k in table if k in _JOB_LISTS]:
                union = _union_column(table[key])
                table[key] = _Const(interned.setdefault(union, union))
        n = 1
    for target, col in regex_cols.items():
        cols[target] = _merge(cols[target], col, n, interned)
    _apply_refs(r, cols, n, lookup, command, script)
    for key in ("input_file_regexes", "output_file_regexes", "input_user_data_regexes",
                "output_user_data_regexes"):
        cols.pop(key, None)
    cols["resource_requirements"] = _Const(e.get_str("resource_requirements", None))
    cols["scheduler"] = _Const(e.get_str("scheduler", None))
    cols["failure_handler"] = _Const(e.get_str("failure_handler", None))
    cols["cancel_on_blocking_job_failure"] = _Const(
        e.get_bool("cancel_on_blocking_job_failure", True)
    )
    cols["supports_termination"] = _Const(e.get_bool("supports_termination", False))
    cols["priority"] = _Const(e.get_int("priority", 0))
    cols["stdio"] = _Const(parse_stdio(e))
    return _Block(e, n, cols)


def _check_names(
    block: _Block, key: str, known: Callable[[str], bool], noun: str
) -> None:
    """Every name in a column exists; per block at most a few located messages."""
    col = block.cols[key]
    bad: dict[str, None] = {}
    if isinstance(col, _Const):
        for name in col.value:
            if not known(name):
                bad[name] = None
    else:
        last: object = None
        for names in col:
            if names is last:
                continue
            last = names
            for name in names:
                if not known(name):
                    bad[name] = None
    for k, name in enumerate(bad):
        if k == MAX_ERRORS_PER_FIELD:
            block.entry.fail(key, f"... and {len(bad) - k} more missing names")
            break
        block.entry.fail(key, f"no {noun} named {name!r}")


def _check_ref(block: _Block, key: str, known: set[str], noun: str) -> None:
    value = cast(_Const, block.cols[key]).value
    if value is not None and value not in known:
        block.entry.fail(key, f"no {noun} named {value!r}")


def _check_outputs(
    blocks: Sequence[_Block],
    key: str,
    path_of: Callable[[str], str],
    noun: str,
    err: _Errors,
) -> None:
    """A file (by path) or user_data (by name) may be the output of one job only."""
    producer: dict[str, tuple[str, _Block]] = {}
    for block in blocks:
        col = block.cols[key]
        if isinstance(col, _Const) and not col.value:
            continue
        pairs: Iterable[tuple[str, tuple[str, ...]]] = zip(
            _values(block.cols["name"], block.n), _values(col, block.n), strict=True
        )
        if isinstance(col, _Const):
            # Every job of the block has the same outputs: the second job conflicts with the
            # first, and going on would be jobs x outputs steps for no news.
            pairs = islice(pairs, 2)
        for job_name, outs in pairs:
            for out in outs:
                target = path_of(out)
                prev = producer.get(target)
                if prev is None:
                    producer[target] = (job_name, block)
                elif prev[0] != job_name:
                    what = f"{out!r}" if target == out else f"{out!r} (path {target!r})"
                    err.add(
                        f"{block.entry.where}: {key}: {noun} {what} is also an output of "
                        f"{prev[0]!r}"
                    )


def _reference_count(col: Column, n: int) -> int:
    """How many names a tuple column holds over ``n`` jobs (a shared tuple once per job)."""
    if isinstance(col, _Const):
        return n * len(col.value)
    return sum(map(len, col))


def _check_run_text(block: _Block, err: _Errors) -> None:
    """The names and commands of a run of plain entries, which bypass ``get_str``, are valid
    text. Checked in bulk: ``str.isascii`` over a million strings takes milliseconds."""
    for key in ("name", "command"):
        texts = cast(list[str], block.cols[key])
        if all(map(str.isascii, texts)):
            continue
        for k, text in enumerate(texts):
            problem = text_problem(text)
            if problem is not None:
                err.add(f"{block.where(k)}: {key}: {problem}")


def _jobs(
    doc: _Entry,
    params: _Params,
    lookup: _Lookup,
    rrs: set[str],
    schedulers: set[str],
    handlers: set[str],
    interned: dict[Any, Any],
    budget: _Budget,
) -> tuple[list[JobSpec], NameIndex]:
    count = budget.count("jobs", "jobs")
    blocks: list[_Block] = []
    plain: dict[str, Column] | None = None  # the columns every plain entry shares
    run_names: list[str] = []  # the names, commands and locations of the current run
    run_commands: list[str] = []
    run_wheres: list[str] = []
    for e in _entries(doc, "jobs"):
        name, command = e.data.get("name"), e.data.get("command")
        # A plain entry (only a literal name and command, no workflow parameters): what command
        # files and `exec` produce, often by the thousand. After the first, which takes the
        # general path, consecutive ones form one block whose name and command columns grow
        # by one value each: every other column and every check is shared.
        is_plain = (not params.shared and len(e.data) == 2 and isinstance(name, str) and name
                    and isinstance(command, str) and command and "${" not in command)
        if is_plain and plain is not None:
            if not run_names:
                run_wheres = []
                blocks.append(_Block(e, 0, {**plain, "name": run_names,
                                            "command": run_commands}, run_wheres))
            run_names.append(cast(str, name))
            run_commands.append(cast(str, command))
            run_wheres.append(e.where)
            blocks[-1].n += 1
            continue
        if run_names:  # the run ends: the next one gets lists of its own
            count.plain(len(run_names))
            run_names, run_commands = [], []
        b = _job_block(e, params, lookup, interned, count, budget)
        if b is None:
            continue
        blocks.append(b)
        if is_plain:
            plain = {k: v for k, v in b.cols.items() if k not in ("name", "command")}
    count.plain(len(run_names))
    if count.report(doc.err):
        budget.exceeded = True
    for b in blocks:
        refs = sum(_reference_count(b.cols[key], b.n) for key in _REF_FIELD.values())
        budget.charge(b.entry.where, refs * REFERENCE_BYTES)
    budget.check(doc.err)
    for b in blocks:
        if b.wheres is not None:
            _check_run_text(b, doc.err)
    all_names: list[str] = []
    for b in blocks:
        all_names.extend(_values(b.cols["name"], b.n))
    known = set(all_names)
    if len(known) != len(all_names):
        seen: set[str] = set()
        for b in blocks:
            dups: dict[str, str] = {}  # name -> where its (first) duplicate was defined
            for k, nm in enumerate(_values(b.cols["name"], b.n)):
                if nm in seen and nm not in dups:
                    dups[nm] = b.where(k)
                seen.add(nm)
            for k, (nm, where) in enumerate(dups.items()):
                if k == MAX_ERRORS_PER_FIELD:
                    doc.err.add(f"{where}: name: ... and {len(dups) - k} more duplicate names")
                    break
                doc.err.add(f"{where}: duplicate job name {nm!r}")
    job_index = NameIndex(all_names, budget=budget.regex)
    file_set = set(lookup.file_names)
    for b in blocks:
        _check_names(b, "depends_on", known.__contains__, "job")
        _check_names(b, "input_files", file_set.__contains__, "file")
        _check_names(b, "output_files", file_set.__contains__, "file")
        _check_names(b, "input_user_data", lookup.ud_set.__contains__, "user_data")
        _check_names(b, "output_user_data", lookup.ud_set.__contains__, "user_data")
        _check_ref(b, "resource_requirements", rrs, "resource_requirements")
        _check_ref(b, "scheduler", schedulers, "scheduler")
        _check_ref(b, "failure_handler", handlers, "failure_handler")
        failed: set[str] = set()
        for patterns in _distinct(b.cols["depends_on_regexes"]):
            for pattern in patterns:
                if pattern in failed:
                    continue
                try:
                    if not job_index.any_match(pattern):
                        failed.add(pattern)
                        if len(failed) <= MAX_ERRORS_PER_FIELD:
                            b.entry.fail("depends_on_regexes", f"{pattern!r} matches no job")
                except RegexError as exc:
                    failed.add(pattern)
                    b.entry.fail("depends_on_regexes", exc.describe(pattern))
                    _stop_if_spent(exc, b.entry)
    file_path = lookup.file_path
    _check_outputs(blocks, "output_files", lambda f: file_path.get(f, f), "file", doc.err)
    _check_outputs(blocks, "output_user_data", lambda u: u, "user_data", doc.err)
    if doc.err.items:
        return [], job_index
    return _build_jobs(blocks), job_index


def _build_jobs(blocks: Sequence[_Block]) -> list[JobSpec]:
    """The job specs of all blocks; runs of single-job blocks are built as one block (one
    column per field) so that ten thousand one-line entries cost one bulk build, not ten
    thousand."""
    jobs: list[JobSpec] = []
    run: list[_Block] = []

    def flush() -> None:
        if len(run) == 1:
            jobs.extend(_bulk_build(JobSpec, 1, run[0].cols))
        elif run:
            cols: dict[str, Column] = {
                key: [b.cols[key].value for b in run]  # type: ignore[union-attr]
                for key in run[0].cols
            }
            jobs.extend(_bulk_build(JobSpec, len(run), cols))
        run.clear()

    for b in blocks:
        if b.n == 1 and all(isinstance(c, _Const) for c in b.cols.values()):
            run.append(b)
        else:
            flush()
            jobs.extend(_bulk_build(JobSpec, b.n, b.cols))
    flush()
    return jobs


def _actions(doc: _Entry, job_index: NameIndex, job_names: set[str], schedulers: set[str],
             names: Sequence[str]) -> list[ActionSpec]:
    out: list[ActionSpec] = []
    for e in _entries(doc, "actions"):
        e.check_keys(_ACTION_KEYS)
        trigger = e.one_of("trigger_type", TRIGGER_TYPES, "")
        if "trigger_type" not in e.data:
            e.fail("trigger_type", "is required")
        action = e.one_of("action_type", ACTION_TYPES, "")
        if "action_type" not in e.data:
            e.fail("action_type", "is required")
        jobs: dict[str, None] = {}
        for name in e.str_list("jobs"):
            if name not in job_names:
                e.fail("jobs", f"no job named {name!r}")
            jobs[name] = None
        for pattern in e.str_list("job_name_regexes"):
            try:
                hits = job_index.match(pattern)
            except RegexError as exc:
                e.fail("job_name_regexes", exc.describe(pattern))
                _stop_if_spent(exc, e)
                continue
            if not hits:
                e.fail("job_name_regexes", f"{pattern!r} matches no job")
            for k in hits:
                jobs[names[k]] = None
        scheduler = e.get_str("scheduler", None)
        if scheduler is not None and scheduler not in schedulers:
            e.fail("scheduler", f"no scheduler named {scheduler!r}")
        d = ActionSpec(trigger_type="", action_type="")
        out.append(
            ActionSpec(
                trigger_type=trigger,
                action_type=action,
                jobs=tuple(jobs),
                commands=tuple(e.str_list("commands")),
                scheduler=scheduler,
                scheduler_type=e.one_of("scheduler_type", SCHEDULER_TYPES, d.scheduler_type),
                num_allocations=e.get_int("num_allocations", d.num_allocations, minimum=1),
                start_one_worker_per_node=e.get_bool(
                    "start_one_worker_per_node", d.start_one_worker_per_node
                ),
                max_parallel_jobs=e.get_int("max_parallel_jobs", None, minimum=1),
                persistent=e.get_bool("persistent", False),
            )
        )
    return out


def parse_spec(
    doc: Mapping[str, Any],
    *,
    max_jobs: int = DEFAULT_MAX_JOBS,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    max_regex_tests: int = DEFAULT_MAX_REGEX_TESTS,
) -> WorkflowSpec:
    """Validate and expand a spec document (Torc's format, ``@file`` values inlined).

    The work is bounded, each bound checked before the expansion it limits: a spec that would
    expand to more than ``max_jobs`` jobs (or files, or user_data), one parameter of more
    than ``max_jobs`` values, or rendered text estimated past ``max_text_bytes`` is refused,
    and its regexes make at most ``max_regex_tests`` (pattern, name) tests.
    Raises :class:`SpecError` listing every problem found, each located."""
    if not isinstance(doc, Mapping):
        raise SpecError(["the spec must be a mapping at the top level"])
    with gc_paused():
        return _parse_spec(doc, _Budget(max_jobs, max_text_bytes, max_regex_tests))


def _parse_spec(doc: Mapping[str, Any], budget: _Budget) -> WorkflowSpec:
    err = _Errors()
    top = _Entry(doc, "", err)
    top.check_keys(_TOP_KEYS)
    name = top.get_str("name", "", required=True)
    params = _Params(top, budget.max_jobs)
    interned: dict[Any, Any] = {EMPTY: EMPTY}

    rrs = _resource_requirements(top)
    handlers = _failure_handlers(top)
    schedulers = _slurm_schedulers(top)
    rr_names = _check_unique(
        ((f"resource_requirements[{k}] {r.name!r}", r.name) for k, r in enumerate(rrs)),
        "resource_requirements", err,
    )
    handler_names = _check_unique(
        ((f"failure_handlers[{k}] {h.name!r}", h.name) for k, h in enumerate(handlers)),
        "failure_handler", err,
    )
    scheduler_names = _check_unique(
        ((f"slurm_schedulers[{k}] {s.name!r}", s.name) for k, s in enumerate(schedulers)),
        "scheduler", err,
    )
    files, file_wheres = _files(top, params, interned, budget)
    _check_unique(zip(file_wheres, (f.name for f in files), strict=True), "file", err)
    uds, ud_wheres = _user_data(top, params, interned, budget)
    budget.check(err)
    _check_unique(zip(ud_wheres, (u.name for u in uds), strict=True), "user_data", err)
    lookup = _Lookup(files, uds, budget.regex)
    jobs, job_index = _jobs(
        top, params, lookup, rr_names, scheduler_names, handler_names, interned, budget
    )
    actions: list[ActionSpec] = []
    if top.data.get("actions"):
        job_names = [j.name for j in jobs]
        actions = _actions(top, job_index, set(job_names), scheduler_names, job_names)
    else:
        _entries(top, "actions")  # type check only

    slurm_defaults = top.mapping("slurm_defaults") or {}
    _check_data(top, "slurm_defaults", slurm_defaults)
    for key in slurm_defaults:
        if key in SLURM_MANAGED:
            err.add(f"slurm_defaults: {key}: is managed by torc (set it on a scheduler)")
    monitor = parse_resource_monitor(top)
    node_settings = parse_compute_node_settings(top)
    metadata = doc.get("metadata")
    _check_data(top, "metadata", metadata)
    execution_config = parse_execution_config(top)
    spec = WorkflowSpec(
        name=name,
        user=top.get_str("user", None),
        description=top.get_str("description", None),
        project=top.get_str("project", None),
        jobs=tuple(jobs),
        files=tuple(files),
        user_data=tuple(uds),
        resource_requirements=tuple(rrs),
        failure_handlers=tuple(handlers),
        slurm_schedulers=tuple(schedulers),
        slurm_defaults=dict(slurm_defaults),
        resource_monitor=monitor,
        actions=tuple(actions),
        use_pending_failed=top.get_bool("use_pending_failed", False),
        jobs_sort_method=top.one_of("jobs_sort_method", JOBS_SORT_METHODS, None),
        max_iterations=top.get_int("max_iterations", DEFAULT_MAX_ITERATIONS, minimum=0),
        compute_node_settings=node_settings,
        metadata=metadata,
        execution_config=execution_config,
        enable_ro_crate=top.get_bool("enable_ro_crate", False),
        warnings=tuple(warnings_for(doc)),
    )
    err.raise_if_any()
    return spec

"""GNU parallel's argument syntax for `torc-trio exec`: input sources and replacement strings.

``torc-trio exec echo {} ::: a b c`` makes one job per value, as ``parallel`` would run one
command per value. What is understood, and how it maps onto a Torc spec:

* Input sources: ``::: VALUES...`` (the words that follow), ``:::: FILES...`` (each file's
  lines, one source per file; ``-`` is standard input) and ``-a FILE``. Several sources
  combine as every combination, the first source varying slowest (parallel's order);
  ``:::+`` / ``::::+`` link a source to the previous one (pairwise), and ``--link zip`` links
  them all. Linked sources must have equal lengths (parallel silently drops the extra values
  of the longer one; here that is an error that names both lengths).
* Replacement strings: ``{}`` (the value; with several sources all of them, space-separated),
  ``{1}``, ``{2}``, ... (a source by position), ``{.}`` (no extension), ``{/}`` (basename),
  ``{//}`` (dirname), ``{/.}`` (basename, no extension), each also positional (``{2/.}``),
  ``{#}`` (the job's sequence number, from 1) and ``{##}`` (the number of jobs). A command
  with none gets the values appended (``exec gzip ::: *.txt``); no command at all runs the
  values themselves as commands (``exec ::: 'echo a' 'echo b'``). ``{%}`` (the job slot) and
  ``{= perl =}`` are refused by name: there is no job slot here, and no Perl.
* Quoting, as parallel's default: a substituted value is quoted for the shell
  (``shlex.quote``: ``a b`` becomes ``'a b'``, ``$HOME`` stays literal) unless it is a plain
  word (letters, digits, ``@%+=:,./-_``). The command itself is not quoted: the words before
  the first ``:::`` are joined by spaces into one shell command line, as parallel does (so
  ``'>'`` redirects and ``'echo {} > {}.out'`` may be one word). Values that are run as the
  commands themselves are not quoted either.

How it scales: the whole set is ONE parameterized job entry in zip mode, whatever the number
of values. Each source (and each transform of it that the command uses: ``{.}``, ``{/}``...)
is a parameter whose values are the already-quoted texts, one per job; a ``seq`` range
parameter (``1:N``) numbers the jobs (``job_0001``...; ``{#}``). Several sources combined as
a product are laid out here (a few list repetitions, no per-job dict), so 100,000 values are
one list of 100,000 strings in the document, and the server expands the rest. The parameter
names (``arg1``, ``arg1_noext``, ``seq``...) are chosen not to clash with any ``{name}`` the
command already contains, which Torc would otherwise substitute.

Reading files happens here (this is the CLI's edge); everything else is pure.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any

from .exits import InputError

#: The separators that start an input source, and whether each links to the previous one.
SEPARATORS = {":::": False, ":::+": True, "::::": False, "::::+": True}
_FILE_SEPARATORS = ("::::", "::::+")

#: A replacement string: {} {N} {.} {N.} {/} {N/} {//} {N//} {/.} {N/.} {#} {##}.
_REPLACEMENT = re.compile(r"\{(?:(\d+)?(\.|/\.|//|/)?|(##|#))\}")
#: parallel's own that cannot be honoured here: the job slot, and Perl expressions.
_UNSUPPORTED = re.compile(r"\{\d*%\}|\{\d*=.*?=\}")
_USER_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)")

_NOEXT = re.compile(r"\.[^/.]*$")
_UPTO_SLASH = re.compile(r".*/")


def _basename(value: str) -> str:
    return _UPTO_SLASH.sub("", value, count=1)


def _noext(value: str) -> str:
    return _NOEXT.sub("", value, count=1)


def _dirname(value: str) -> str:
    """Perl's File::Basename::dirname, which parallel's ``{//}`` is: ``a/b/c`` -> ``a/b``,
    ``file`` -> ``.``, ``/x`` -> ``/``, ``a/b/`` -> ``a``."""
    trimmed = value.rstrip("/")
    if not trimmed:
        return "/" if value else "."
    if "/" not in trimmed:
        return "."
    return trimmed[: trimmed.rindex("/")].rstrip("/") or "/"


#: transform -> (parameter-name suffix, function)
_TRANSFORMS: dict[str, tuple[str, Callable[[str], str]]] = {
    "": ("", str),
    ".": ("_noext", _noext),
    "/": ("_base", _basename),
    "//": ("_dir", _dirname),
    "/.": ("_base_noext", lambda v: _noext(_basename(v))),
}


@dataclass(slots=True)
class Source:
    """One input source: its values, whether it is linked to the previous source, and how
    to name it in an error ('input source 2 (:::)', "input source 1 (:::: names.txt)")."""

    values: list[str]
    linked: bool
    origin: str


@dataclass(slots=True)
class ParallelArgs:
    """``exec``'s positional words split at the first separator."""

    words: list[str]  # the command words before the first separator
    sources: list[Source]


def has_sources(argv: Sequence[str]) -> bool:
    return any(word in SEPARATORS for word in argv)


def _ordinal(n: int) -> str:
    return f"input source {n}"


def _values(n: int) -> str:
    return "1 value" if n == 1 else f"{n} values"


def read_lines(path: str, origin: str) -> list[str]:
    """Every line of a file (or ``-``, standard input) is a value, empty ones too, as in
    parallel; a final newline does not make an empty last value. ``origin`` names the
    source in errors."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{origin}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{origin}: {path} is not UTF-8 text (byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def split_sources(argv: Sequence[str], arg_files: Sequence[str] = ()) -> ParallelArgs:
    """The command words and the input sources of ``exec WORDS... ::: A B :::: FILE ...``;
    ``arg_files`` (``-a FILE``) are sources before those of the separators, as in parallel."""
    words: list[str] = []
    sources: list[Source] = []
    stdin_used = False

    def file_source(path: str, linked: bool, sep: str) -> Source:
        nonlocal stdin_used
        n = len(sources) + 1
        if path == "-":
            if stdin_used:
                raise InputError(f"{_ordinal(n)} ({sep} -): standard input can be read once")
            stdin_used = True
        origin = f"{_ordinal(n)} ({sep} {path})"
        values = read_lines(path, origin)
        if not values:
            raise InputError(f"{origin}: the file has no lines, so there is nothing to run")
        return Source(values, linked, origin)

    for path in arg_files:
        sources.append(file_source(path, False, "-a"))
    current: str | None = None  # the separator in force
    pending: list[str] = []  # values of the current ::: source
    files_seen = 0  # files after the current :::: separator

    def close() -> None:
        nonlocal pending, files_seen
        if current is None:
            return
        n = len(sources) + 1
        if current in _FILE_SEPARATORS:
            if not files_seen:
                raise InputError(f"{current} needs a file after it (its lines are the values;"
                                 " - for standard input)")
        elif not pending:
            raise InputError(f"{_ordinal(n)} ({current}) has no values: give them after it "
                             f"({current} a b c)")
        else:
            sources.append(Source(pending, SEPARATORS[current], f"{_ordinal(n)} ({current})"))
        pending = []
        files_seen = 0

    for word in argv:
        if word in SEPARATORS:
            close()
            current = word
        elif current is None:
            words.append(word)
        elif current in _FILE_SEPARATORS:
            # `:::: a b`: two sources (parallel's); only the first is linked by '::::+'.
            sources.append(file_source(word, SEPARATORS[current] and not files_seen, current))
            files_seen += 1
        else:
            pending.append(word)
    close()
    return ParallelArgs(words, sources)


def _groups(sources: Sequence[Source], link_all: bool) -> list[list[int]]:
    """Source indices grouped: linked sources share a group (pairwise), groups combine as a
    product."""
    groups: list[list[int]] = []
    for k, source in enumerate(sources):
        if source.linked and not groups:
            raise InputError(f"{source.origin}: links to the previous input source, and there "
                             "is none (use ::: or :::: for the first)")
        if groups and (source.linked or link_all):
            first = sources[groups[-1][0]]
            if len(source.values) != len(first.values):
                raise InputError(
                    f"{source.origin} is linked to {first.origin} (pairwise), but has "
                    f"{_values(len(source.values))} and that one {len(first.values)}: give "
                    "linked sources the same number of values (GNU parallel would drop the "
                    "extra ones)")
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


@dataclass(frozen=True, slots=True)
class _Use:
    """One parameter the command uses: a source, transformed, quoted or not."""

    source: int  # 0-based
    transform: str
    quoted: bool


def _internal_prefix(command: str) -> str:
    """A prefix for the internal parameter names that no ``{name`` in the command starts
    with (Torc would substitute a ``{arg1}`` the user wrote for a shell or awk)."""
    used = set(_USER_NAME.findall(command))
    prefix = ""
    while any(n.startswith(prefix + "arg") or n.startswith(prefix + "seq") for n in used):
        prefix += "_"
    return prefix


def _translate(command: str | None, nsources: int, total: int,
               prefix: str) -> tuple[str, list[_Use], dict[_Use, str]]:
    """The command as a Torc template, and the parameters it uses (in order of first use)."""
    uses: dict[_Use, str] = {}
    seq = prefix + "seq"

    def name_of(use: _Use) -> str:
        if use not in uses:
            suffix = _TRANSFORMS[use.transform][0] + ("" if use.quoted else "_raw")
            uses[use] = f"{prefix}arg{use.source + 1}{suffix}"
        return "{" + uses[use] + "}"

    def every(transform: str, quoted: bool = True) -> str:
        return " ".join(name_of(_Use(k, transform, quoted)) for k in range(nsources))

    if command is None:  # the values are the commands: parallel runs them as they are
        return every("", quoted=False), list(uses), uses

    bad = _UNSUPPORTED.search(command)
    if bad:
        what = ("the job slot ({%})" if bad.group().endswith("%}")
                else "Perl expressions ({= ... =})")
        raise InputError(f"the command uses {bad.group()}: {what} is GNU parallel's and is not "
                         "supported by torc-trio exec")

    found = False

    def replace(m: re.Match[str]) -> str:
        nonlocal found
        found = True
        position, transform, special = m.group(1), m.group(2) or "", m.group(3)
        if special == "#":
            return "{" + seq + "}"
        if special == "##":
            return str(total)
        if position is None:
            return every(transform)
        k = int(position)
        if not 1 <= k <= nsources:
            have = ("there is 1 input source ({1}, or {})" if nsources == 1 else
                    f"there are {nsources} input sources ({{1}} to {{{nsources}}})")
            raise InputError(f"the command uses {m.group()}, but {have}")
        return name_of(_Use(k - 1, transform, True))

    template = _REPLACEMENT.sub(replace, command)
    if not found:  # parallel appends the values to a command without replacement strings
        template = f"{template} {every('')}" if template.strip() else every("", quoted=False)
    return template, list(uses), uses


def _column(values: Sequence[str], inner: int, outer: int) -> list[str] | Sequence[str]:
    """A source's values laid out over every job of a product: each value ``inner`` times in
    a row, the whole ``outer`` times."""
    if inner == 1 and outer == 1:
        return values
    block = list(chain.from_iterable(repeat(v, inner) for v in values)) if inner > 1 \
        else list(values)
    return block * outer


def parallel_spec(name: str, command: str | None, sources: Sequence[Source], *,
                  link_all: bool = False) -> dict[str, Any]:
    """The spec document: one job per combination of the sources' values."""
    groups = _groups(sources, link_all)
    lengths = [len(sources[g[0]].values) for g in groups]
    total = math.prod(lengths)
    prefix = _internal_prefix(command or "")
    template, uses, names = _translate(command, len(sources), total, prefix)
    # Where each source sits in the product: what varies faster (inner) and slower (outer).
    layout: dict[int, tuple[int, int]] = {}
    for gi, group in enumerate(groups):
        inner = math.prod(lengths[gi + 1:])
        outer = math.prod(lengths[:gi])
        for k in group:
            layout[k] = (inner, outer)
    parameters: dict[str, Any] = {prefix + "seq": f"1:{total}"}
    for use in uses:
        func = _TRANSFORMS[use.transform][1]
        texts = [func(v) for v in sources[use.source].values] if use.transform else \
            sources[use.source].values
        if use.quoted:
            texts = [shlex.quote(t) for t in texts]
        inner, outer = layout[use.source]
        parameters[names[use]] = _column(texts, inner, outer)
    width = len(str(total))
    return {
        "name": name,
        "jobs": [{
            "name": f"job_{{{prefix}seq:0{width}d}}",
            "command": template,
            "parameters": parameters,
            "parameter_mode": "zip",
        }],
    }

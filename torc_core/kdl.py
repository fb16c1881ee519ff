"""KDL workflow specs: a KDL document -> the document the YAML/JSON loaders produce.

Torc reads ``.kdl`` specs beside YAML and JSON5; :func:`kdl_to_doc` turns one into Torc's
document format, so :func:`~torc_core.parse.parse_spec` validates it unchanged and every format
means the same. The mapping is Torc's (``kdl_*_to_json`` in its ``workflow_spec.rs``)::

    name "wf"                                  -> name: wf
    job "b" { command "x"; depends_on "a" }    -> jobs: [{name: b, command: x, depends_on: [a]}]
    file "f" path="f.txt"                      -> files: [{name: f, path: f.txt}]
    user_data "u" { data "{\\"k\\": 1}" }       -> user_data: [{name: u, data: {k: 1}}]
    failure_handler "h" { rule { exit_codes 1 2 } }  -> failure_handlers: [{..., rules: [...]}]
    action { trigger_type "..."; command "a"; command "b" }  -> actions: [{commands: [a, b]}]
    parameters { i "1:10" }  /  execution_config { stdio { mode "combined" } }  -> mappings

Singular node names repeat into lists (``input_file``, ``output_file``, ``depends_on_job``, an
action's ``job`` and ``command``); a list node may also carry several values
(``depends_on "a" "b"``). Which nodes each block accepts is :data:`torc_core.settings.FIELDS`,
the same list the YAML keys are checked against.

Where Torc 0.12 departs, on purpose: an unknown node is an error naming it and its line (Torc
ignores it silently, so a typo such as ``depends_on_jb`` dropped a dependency); a list node
keeps all its values (Torc kept the first of ``depends_on_regexes "a" "b"``); a scalar given
twice is an error (Torc kept the last).

Why the line numbers take work: ckdl reports neither where a syntax error is nor where a node
is. A small scanner (:func:`_scan`) finds where the text may be cut (line starts outside
strings and comments, with their brace depth); a cut prefix closed with ``}`` is a whole
document again, so ckdl itself, parsing prefixes, says on which line a node starts or the
first error lies. That work is done only for a document that has an error.
"""

from __future__ import annotations

import difflib
import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import ckdl

from .errors import SpecError
from .settings import section_keys

#: At most this many node problems are located and reported (then "... and N more").
MAX_PROBLEMS = 100
#: Finding a syntax error's column parses prefixes of its top-level node once per character
#: back from the end of its line; past this many characters parsed in all, the line is given
#: without a column (a 1 MB node and a long line would take minutes).
MAX_COLUMN_WORK = 20_000_000

# A node of a ckdl document (the package has no type information).
_Node = Any

#: Top-level KDL node -> (the document's list key, its settings.FIELDS section, named).
_SECTIONS: dict[str, tuple[str, str, bool]] = {
    "job": ("jobs", "job", True),
    "file": ("files", "file", True),
    "user_data": ("user_data", "user_data", True),
    "resource_requirements": ("resource_requirements", "resource_requirements", True),
    "failure_handler": ("failure_handlers", "failure_handler", True),
    "slurm_scheduler": ("slurm_schedulers", "slurm_scheduler", True),
    "action": ("actions", "action", False),
}
#: Block kinds nested in a section: (section, node) -> (list key, FIELDS section, named).
_SUB_SECTIONS = {("failure_handler", "rule"): ("rules", "failure_handler rule", False)}
#: Node names Torc's KDL uses for a key (the key itself is accepted too).
_ALIASES = {
    "job": {"depends_on_job": "depends_on", "input_file": "input_files",
            "output_file": "output_files"},
    "action": {"job": "jobs", "command": "commands"},
}
#: Keys whose node may carry several values and repeat: the values are collected in order.
_LIST_KEYS = frozenset({
    "depends_on", "depends_on_regexes", "input_files", "output_files", "input_user_data",
    "output_user_data", "input_file_regexes", "output_file_regexes", "input_user_data_regexes",
    "output_user_data_regexes", "use_parameters", "jobs", "job_name_regexes", "commands",
    "exit_codes", "access_groups",
})
#: Keys whose node is a block (children and/or properties) that becomes a mapping as written.
#: (``env``, ``variables`` and ``access_groups`` are Torc 0.25's: shaped here, accepted once
#: settings.FIELDS lists them.)
_MAP_KEYS = frozenset({"parameters", "stdio", "execution_config", "slurm_defaults",
                       "resource_monitor", "env", "variables"})
#: ``metadata "<text>"`` or ``metadata { key "value" }``.
_SCALAR_OR_MAP_KEYS = frozenset({"metadata"})
#: A user_data's ``data`` is JSON text (Torc's form) or a block.
_JSON_KEYS = frozenset({"data"})


# --------------------------------------------------------------------------------------------
# Parsing


def kdl_to_doc(text: str) -> dict[str, Any]:
    """A KDL spec as Torc's document. KDL v2 first, v1 if v2 refuses the text (Torc's
    examples use v2's ``#true``; older specs v1's ``true``); when both refuse it, the v2 error
    is reported with its line and column. Raises :class:`SpecError` with every problem, each
    with the line of the node it is about."""
    if "\x00" in text:
        raise SpecError([f"KDL: a NUL character at {_where(text, text.index(chr(0)))}"])
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SpecError([f"KDL: not valid text (a lone surrogate at "
                         f"{_where(text, exc.start)})"]) from None
    try:
        document, version = ckdl.parse(text, version=2), 2
    except ckdl.ParseError as v2_error:
        try:
            document, version = ckdl.parse(text, version=1), 1
        except ckdl.ParseError as v1_error:
            raise SpecError([_syntax_message(text, str(v2_error), str(v1_error))]) from None
    converter = _Converter(document.nodes)
    doc = converter.convert(document.nodes)
    if converter.problems:
        raise SpecError(_located(text, version, converter.problems, converter.index))
    return doc


def _located(text: str, version: int, problems: Sequence[tuple[_Node, str]],
             index: dict[int, int]) -> list[str]:
    shown = problems[:MAX_PROBLEMS]
    lines = _node_lines(text, version, {index[id(node)] for node, _ in shown})
    out = []
    for node, message in shown:
        line = lines.get(index[id(node)])
        out.append(f"line {line}: {message}" if line is not None else message)
    if len(problems) > len(shown):
        out.append(f"... and {len(problems) - len(shown)} more errors")
    return out


# --------------------------------------------------------------------------------------------
# Nodes -> the document


@cache
def _accepted(section: str) -> frozenset[str]:
    """The node names a block accepts (FIELDS' keys, with Torc's KDL names and block kinds)."""
    keys = set(section_keys(section)) - {"name"}
    if section == "workflow":
        keys = (keys - {v[0] for v in _SECTIONS.values()}) | {"name", *_SECTIONS}
    keys -= {key for (sec, _), (key, _, _) in _SUB_SECTIONS.items() if sec == section}
    keys |= {node for (sec, node) in _SUB_SECTIONS if sec == section}
    return frozenset(keys | set(_ALIASES.get(section, {})))


def _plain(value: object) -> Any:
    """A ckdl value without its type annotation (``(u8)5`` is 5)."""
    return value.value if isinstance(value, ckdl.Value) else value


def _count(nodes: Sequence[_Node]) -> int:
    return sum(1 + _count(node.children) for node in nodes)


class _Converter:
    """Walks the nodes once, building the document and collecting (node, problem) pairs."""

    def __init__(self, roots: Sequence[_Node]) -> None:
        self.problems: list[tuple[_Node, str]] = []
        #: id(node) -> its index in document order (depth first): what _node_lines locates.
        self.index: dict[int, int] = {}
        self._keep: list[_Node] = []  # the nodes, so their ids stay theirs
        stack = list(reversed(roots))
        while stack:
            node = stack.pop()
            self.index[id(node)] = len(self._keep)
            self._keep.append(node)
            stack.extend(reversed(node.children))

    def fail(self, node: _Node, where: str, problem: str) -> None:
        self.problems.append((node, f"{where}: {problem}" if where else problem))

    def convert(self, roots: Sequence[_Node]) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        self.block(doc, roots, "workflow", "")
        doc.setdefault("jobs", [])  # as Torc: a spec without jobs has an empty list
        return doc

    def block(self, out: dict[str, Any], nodes: Sequence[_Node], section: str,
              where: str) -> None:
        for node in nodes:
            self.child(out, node, node.name, list(node.args), dict(node.properties),
                       node.children, section, where)

    def child(self, out: dict[str, Any], node: _Node, name: str, args: list[Any],
              props: dict[str, Any], children: Sequence[_Node], section: str,
              where: str, what: str = "node") -> None:
        """One node (or a property of a job, file...) of a block -> its key in ``out``."""
        here = f"{where}: {name}" if where else name
        if name not in _accepted(section):
            self.fail(node, where, _unknown(name, section, what, bool(where)))
            return
        nested = _SECTIONS.get(name) if section == "workflow" else None
        nested = nested or _SUB_SECTIONS.get((section, name))
        if nested is not None:
            entry = self.entry(node, name, args, props, children, nested, where)
            if entry is not None:
                out.setdefault(nested[0], []).append(entry)
            return
        key = _ALIASES.get(section, {}).get(name, name)
        if key in _LIST_KEYS:
            if props or children or not args:
                self.fail(node, here, "expected one or more values "
                          f"({name} \"a\" \"b\", or one {name} node per value)")
                return
            out.setdefault(key, []).extend(_plain(a) for a in args)
            return
        if key in out:
            self.fail(node, here, "given more than once")
            return
        value: Any
        if key in _MAP_KEYS or (key in _SCALAR_OR_MAP_KEYS and not args):
            if args:
                self.fail(node, here, f"expected a block ({name} {{ key \"value\" }}), "
                          f"got {len(args)} value(s)")
                return
            value = self.mapping(node, props, children, here)
        elif key in _JSON_KEYS and not args and (props or children):
            value = self.mapping(node, props, children, here)
        else:
            if props or children or len(args) != 1:
                self.fail(node, here, _one_value(name, args, props, children))
                return
            value = _plain(args[0])
            if key in _JSON_KEYS and isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    self.fail(node, here, f"not valid JSON: {exc.msg} at character "
                              f"{exc.pos + 1} of the text")
                    return
        out[key] = value

    def entry(self, node: _Node, kind: str, args: list[Any], props: dict[str, Any],
              children: Sequence[_Node], nested: tuple[str, str, bool],
              where: str) -> dict[str, Any] | None:
        """One job, file, rule, action...: its name (the argument), properties, children."""
        _, section, named = nested
        entry: dict[str, Any] = {}
        label = f"{where}: {kind}" if where else kind
        if named:
            name = _plain(args[0]) if args else None
            if not isinstance(name, str) or len(args) != 1:
                got = ("no name" if not args else f"{len(args)} values" if len(args) > 1
                       else f"the {type(name).__name__} {name!r}")
                self.fail(node, where, f"{kind} needs one name, a string: {kind} \"NAME\" "
                          f"{{ ... }} (got {got})")
                return None
            entry["name"] = name
            label = f"{label} {name!r}"
        elif args:
            self.fail(node, label, f"takes no values (got {len(args)}); its settings go in "
                      "its block")
            return None
        for prop, value in props.items():
            self.child(entry, node, prop, [value], {}, (), section, label, "property")
        self.block(entry, children, section, label)
        return entry

    def mapping(self, node: _Node, props: dict[str, Any], children: Sequence[_Node],
                where: str) -> dict[str, Any]:
        """A block as written: properties and children by name, nested blocks as mappings,
        several values as a list."""
        out = {key: _plain(value) for key, value in props.items()}
        for child in children:
            here = f"{where}: {child.name}"
            if child.name in out:
                self.fail(child, here, "given more than once")
                continue
            args = [_plain(a) for a in child.args]
            if args and (child.properties or child.children):
                self.fail(child, here, "has both values and a block; give one")
            elif child.properties or child.children:
                out[child.name] = self.mapping(child, dict(child.properties),
                                               child.children, here)
            elif not args:
                self.fail(child, here, "has no value")
            else:
                out[child.name] = args[0] if len(args) == 1 else args
        return out


def _one_value(name: str, args: Sequence[Any], props: dict[str, Any],
               children: Sequence[_Node]) -> str:
    if props:
        return f"takes no properties (got {', '.join(sorted(props))}=)"
    if children:
        return "takes one value, not a block"
    if not args:
        return f"has no value ({name} VALUE)"
    return f"takes one value, got {len(args)}"


def _unknown(name: str, section: str, what: str, located: bool) -> str:
    named = {sec: kind for kind, (_, sec, is_named) in _SECTIONS.items() if is_named}
    if name == "name" and section in named:
        return (f"unknown {what} 'name': the name is the block's argument, "
                f"{named[section]} \"NAME\" {{ ... }}")
    known = sorted(_accepted(section))
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        hint = f"did you mean {close[0]!r}?"
    else:
        hint = "known here: " + ", ".join(known)
    block = "" if located else " at the top level" if section == "workflow" else \
        f" in a {section}"
    return f"unknown {what} {name!r}{block} ({hint})"


# --------------------------------------------------------------------------------------------
# Where things are: ckdl gives no positions


@dataclass
class _Scan:
    """Where a KDL text may be cut: ``cuts`` are line starts outside strings, comments and
    continued nodes, with the brace ``depths`` there; ``braces``/``brace_depths`` every brace
    and the depth after it; ``unclosed`` the outermost ``{`` still open at the end."""

    text: str
    cuts: list[int]
    depths: list[int]
    braces: list[int]
    brace_depths: list[int]
    unclosed: int | None

    def depth_at(self, pos: int) -> int:
        k = bisect_left(self.braces, pos)
        return self.brace_depths[k - 1] if k else 0

    def chunks(self) -> Iterator[tuple[int, int]]:
        """Runs of whole top-level nodes: between cuts at depth 0."""
        starts = [c for c, d in zip(self.cuts, self.depths, strict=True) if d == 0]
        ends = [*starts[1:], len(self.text)]
        return ((a, b) for a, b in zip(starts, ends, strict=True) if a < b)

    def cuts_within(self, a: int, b: int) -> list[int]:
        return self.cuts[bisect_right(self.cuts, a):bisect_left(self.cuts, b)]

    def closed(self, a: int, p: int) -> str:
        """``text[a:p]`` as a whole document: its open blocks closed."""
        return self.text[a:p] + "\n" + "}" * self.depth_at(p)


_STRING_PART = re.compile(r'[\\"]')
_COMMENT_PART = re.compile(r"/\*|\*/")


def _hashes(text: str, i: int) -> int:
    """How many ``#`` start at ``i`` (a raw string's fence)."""
    j = i
    while j < len(text) and text[j] == "#":
        j += 1
    return j - i


def _skip_string(text: str, i: int) -> int:
    """The end of the string starting at ``i`` (``"..."``, ``\"\"\"...\"\"\"``, raw ``#"..."#``,
    v1's ``r"..."``), or -1 if it never ends."""
    raw = text[i] in "r#"
    if text[i] == "r":
        i += 1
    hashes = _hashes(text, i) if raw else 0
    j = i + hashes
    opener = '"""' if text.startswith('"""', j) else '"'
    closer = opener + "#" * hashes
    k = j + len(opener)
    if raw:
        end = text.find(closer, k)
        return -1 if end < 0 else end + len(closer)
    while True:
        m = _STRING_PART.search(text, k)
        if m is None:
            return -1
        if m.group() == "\\":
            k = m.end() + 1
        elif text.startswith(closer, m.start()):
            return m.start() + len(closer)
        else:
            k = m.end()


def _skip_comment(text: str, i: int) -> int:
    """The end of the (nested) block comment starting at ``i``, or -1."""
    depth, k = 0, i
    while True:
        m = _COMMENT_PART.search(text, k)
        if m is None:
            return -1
        depth += 1 if m.group() == "/*" else -1
        k = m.end()
        if depth == 0:
            return k


def _starts_string(text: str, i: int) -> bool:
    c = text[i]
    if c == '"':
        return True
    if c == "r" and (i == 0 or text[i - 1] in " \t\r\n;{}()=\\"):
        i += 1
        c = text[i] if i < len(text) else ""
        if c == '"':
            return True
    if c == "#":
        return text.startswith('"', i + _hashes(text, i))
    return False


def _scan(text: str) -> _Scan:
    """One pass over the text, KDL's lexical rules only. It stops at a ``}`` that closes
    nothing and at a string or comment that never ends: nothing after those can be cut."""
    cuts, depths, braces, brace_depths, opens = [0], [0], [], [], []
    depth, i, n, continued = 0, 0, len(text), False
    while i < n:
        c = text[i]
        if c == "\n":
            i += 1
            if not continued:
                cuts.append(i)
                depths.append(depth)
            continued = False
        elif c in " \t\r\ufeff":
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            i = _skip_comment(text, i)
            if i < 0:
                break
        elif text.startswith("/-", i) or c == "\\":  # the node goes on past the newline
            continued = True
            i += 1 if c == "\\" else 2
        elif _starts_string(text, i):
            continued = False
            i = _skip_string(text, i)
            if i < 0:
                break
        else:
            continued = False
            if c == "{":
                depth += 1
                opens.append(i)
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
                opens.pop()
            if c in "{}":
                braces.append(i)
                brace_depths.append(depth)
            i += 1
    return _Scan(text, cuts, depths, braces, brace_depths,
                 opens[0] if opens and i >= n else None)


def _parses(source: str, version: int) -> Any:
    """The ckdl document of ``source``, or None if ckdl refuses it."""
    try:
        return ckdl.parse(source, version=version)
    except ckdl.ParseError:
        return None


def _first(cuts: Sequence[int], bad: Callable[[int], bool]) -> int:
    """The index of the first cut that is ``bad`` (len(cuts) if none is), assuming that once
    a cut is bad every later one is."""
    lo, hi = 0, len(cuts)
    while lo < hi:
        mid = (lo + hi) // 2
        if bad(cuts[mid]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _where(text: str, pos: int, column: bool = True) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    line = text.count("\n", 0, pos) + 1
    return f"line {line}, column {pos - line_start + 1}" if column else f"line {line}"


def _error_position(text: str, version: int, message: str) -> tuple[int, bool] | None:
    """Where ckdl's first error in ``text`` is: (position, whether the column is known)."""
    scan = _scan(text)
    if message.startswith("Unexpected end of data (unclosed") and scan.unclosed is not None:
        return scan.unclosed, True
    for a, b in scan.chunks():
        if _parses(text[a:b], version) is not None:
            continue
        cuts = scan.cuts_within(a, b)

        def bad(c: int, a: int = a) -> bool:
            return _parses(scan.closed(a, c), version) is None

        k = _first(cuts, bad)
        start = cuts[k - 1] if k else a
        end = cuts[k] if k < len(cuts) else b
        if (end - start) * (end - a) > MAX_COLUMN_WORK:
            return start, False
        p = end - 1
        while p > start and _parses(scan.closed(a, p), version) is None:
            p -= 1
        while p > start and text[p - 1] not in " \t\r\n;{}()=\\":  # the token's start
            p -= 1
        while p < end - 1 and text[p] in " \t\r\n":
            p += 1
        return p, True
    return None


def _syntax_message(text: str, v2_message: str, v1_message: str) -> str:
    v2 = _error_position(text, 2, v2_message)
    if v2 is None:
        return f"KDL syntax error: {v2_message}"
    pos, column = v2
    what = f"{v2_message}: this '{{' is never closed" if text[pos:pos + 1] == "{" and \
        v2_message.startswith("Unexpected end of data") else v2_message
    message = f"KDL syntax error at {_where(text, pos, column)}: {what}"
    v1 = _error_position(text, 1, v1_message)
    if v1 is not None and v1[0] > pos:  # the text reads further as KDL v1: say so too
        message += f" (read as KDL v1: {_where(text, v1[0], v1[1])}: {v1_message})"
    return message


def _node_lines(text: str, version: int, wanted: set[int]) -> dict[int, int]:
    """The line each wanted node (by its index in document order) starts on."""
    scan = _scan(text)
    todo = sorted(wanted)
    out: dict[int, int] = {}
    before = 0  # nodes in the chunks already passed
    for a, b in scan.chunks():
        if not todo:
            break
        chunk = _parses(text[a:b], version)
        if chunk is None:
            break  # the scanner and ckdl disagree: no more lines
        count = _count(chunk.nodes)
        while todo and todo[0] < before + count:
            q = todo.pop(0) - before
            cuts = scan.cuts_within(a, b)

            def past(c: int, q: int = q, a: int = a) -> bool:
                prefix = _parses(scan.closed(a, c), version)
                return prefix is None or _count(prefix.nodes) > q

            k = _first(cuts, past)
            out[q + before] = text.count("\n", 0, cuts[k - 1] if k else a) + 1
        before += count
    return out

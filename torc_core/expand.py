"""Parameter expansion as columns: a job, file or user_data entry with ``parameters`` becomes
a block whose fields are one shared value or a list of per-entry values, rendered by compiled
templates within the spec's budget (counts checked before expansion, text estimated before it
is made). Used by :mod:`torc_core.parse`, which builds the spec's objects from the columns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from itertools import chain, repeat
from typing import Any, TypeVar, cast

from .checks import (
    shown,
    text_problem,
)
from .entries import MAX_ERRORS as MAX_ERRORS
from .entries import Entry as _Entry
from .entries import Errors as _Errors
from .graph import (
    DEFAULT_MAX_REGEX_TESTS,
    RegexBudget,
)
from .load import FORMATS as FORMATS
from .load import MAX_YAML_ALIAS_NODES as MAX_YAML_ALIAS_NODES
from .load import fmt_for_path as fmt_for_path
from .load import inline_value_files as inline_value_files
from .load import load_spec_text as load_spec_text
from .load import value_file_references as value_file_references
from .params import (
    PARAMETER_MODES,
    Combinations,
    ParameterError,
    ParamValues,
    Template,
    make_combinations,
    parse_parameter_value,
    placeholder_names,
    value_width,
)
from .spec import (
    EMPTY,
)
from .units import MAX_SCALAR_TEXT as MAX_SCALAR_TEXT
from .units import parse_duration as parse_duration
from .units import parse_memory as parse_memory

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Parameters


class _Params:
    """Workflow-level parameters and per-entry combination building. One parameter may take
    at most ``max_values`` values (a spec could not use more)."""

    def __init__(self, doc: _Entry, max_values: int) -> None:
        self.err = doc.err
        self.max_values = max_values
        self.shared: dict[str, ParamValues] = {}
        self._cache: dict[object, ParamValues] = {}
        table = doc.mapping("parameters")
        for name, value in (table or {}).items():
            parsed = self.parse(value, "parameters", name)
            if parsed is not None:
                self.shared[name] = parsed

    def parse(self, value: object, where: str, name: str) -> ParamValues | None:
        key: object = value if isinstance(value, str) else None
        if key is not None and key in self._cache:
            return self._cache[key]
        try:
            parsed = parse_parameter_value(value, max_values=self.max_values)
        except ParameterError as exc:
            label = name if text_problem(name) is None else repr(name)  # a message is text
            self.err.add(f"{where}: {label}: {exc}")
            return None
        if key is not None:
            self._cache[key] = parsed
        return parsed

    def combinations(self, entry: _Entry, texts: Iterable[str]) -> Combinations | None:
        """The entry's combinations, or None for a plain entry. ``texts`` are its template
        strings: with neither ``parameters`` nor ``use_parameters``, workflow parameters that
        appear in them as placeholders apply (Torc's shared parameters)."""
        own = entry.mapping("parameters")
        use = entry.str_list("use_parameters")
        mode = entry.one_of("parameter_mode", PARAMETER_MODES, "product")
        merged: dict[str, ParamValues] = {}
        ok = True
        for name in use:
            if name not in self.shared:
                entry.fail("use_parameters", f"no workflow parameter named {name!r}")
                ok = False
            else:
                merged[name] = self.shared[name]
        for name, value in (own or {}).items():
            parsed = self.parse(value, f"{entry.where}: parameters", name)
            if parsed is None:
                ok = False
            else:
                merged[name] = parsed
        if own is None and not use and self.shared:
            used: set[str] = set()
            for text in texts:
                used |= placeholder_names(text)
            merged = {n: v for n, v in self.shared.items() if n in used}
        if not ok:
            return _FAILED
        if not merged:
            return None
        try:
            return make_combinations(merged, mode)
        except ParameterError as exc:
            entry.fail("parameters", str(exc))
            return _FAILED


_FAILED = Combinations((), (), "product")  # sentinel: parameters had errors


class _Count:
    """How many entries a section (jobs, files, user_data) expands to, counted before each
    entry expands.

    Why before: 141 bytes of ``parameters: {a: "1:100000", b: "1:100000"}`` are 10^10 jobs,
    which grew the server to 5 GB on their way to a MemoryError. An entry's count is
    arithmetic (:meth:`Combinations.count`), so a section past its limit is refused having
    expanded at most ``limit`` entries, and the message still says the whole count.
    """

    __slots__ = ("largest", "limit", "noun", "section", "total", "where")

    def __init__(self, section: str, noun: str, limit: int) -> None:
        self.section = section
        self.noun = noun
        self.limit = limit
        self.total = 0
        self.largest = 0
        self.where = ""

    def admit(self, where: str, combos: Combinations | None) -> bool:
        """Count an entry's combinations; whether it may expand (all are within the limit).
        """
        count = combos.count() if combos is not None else 1
        self.total += count
        if count > self.largest:
            self.largest, self.where = count, where
        return self.total <= self.limit

    def plain(self, count: int) -> None:
        """Count ``count`` entries that have no parameters (they expand to themselves)."""
        self.total += count

    def report(self, err: _Errors) -> bool:
        """Whether the section is past its limit, saying so (and which entry made the most)."""
        if self.total <= self.limit:
            return False
        message = (
            f"{self.section}: {self.total} {self.noun} after parameter expansion, more than "
            f"the limit of {self.limit} (serve --max-jobs-per-workflow)"
        )
        if self.largest > 1:
            message += f"; the most from {self.where}: {self.largest}"
        err.add(message)
        return True


class _Budget:
    """What one parse may make, each part checked before the expansion it bounds: at most
    ``max_jobs`` entries per section (:class:`_Count`) and ``max_text`` bytes of rendered text
    in all sections together, estimated per entry as combinations x the templates'
    :meth:`~torc_core.params.Template.size_bound`.

    Once a limit is passed, nothing more expands, and :meth:`check` raises with every error so
    far: later sections would only report references to entries that were never made."""

    __slots__ = ("_widths", "exceeded", "largest", "max_jobs", "max_text", "regex", "text",
                 "where")

    def __init__(self, max_jobs: int, max_text: int,
                 max_regex_tests: int = DEFAULT_MAX_REGEX_TESTS) -> None:
        #: the (pattern, name) tests of every regex field of the spec together
        self.regex = RegexBudget(max_regex_tests)
        self.max_jobs = max_jobs
        self.max_text = max_text
        self.text = 0
        self.largest = 0
        self.where = ""
        self.exceeded = False
        self._widths: dict[int, tuple[ParamValues, int]] = {}

    def count(self, section: str, noun: str) -> _Count:
        return _Count(section, noun, self.max_jobs)

    def width(self, values: ParamValues) -> int:
        """:func:`value_width`, once per values object (a workflow parameter serves many)."""
        hit = self._widths.get(id(values))
        if hit is not None and hit[0] is values:
            return hit[1]
        width = value_width(values)
        self._widths[id(values)] = (values, width)
        return width

    def charge(self, where: str, size: int) -> bool:
        """Count an entry's estimated text; whether it may expand."""
        self.text += size
        if size > self.largest:
            self.largest, self.where = size, where
        return self.text <= self.max_text

    def check(self, err: _Errors) -> None:
        if self.text > self.max_text:
            err.add(
                f"the spec would expand to about {self.text} bytes of text and references, "
                f"more than the limit of {self.max_text}; the most from {self.where}: about "
                f"{self.largest}"
            )
            self.exceeded = True
        if self.exceeded:
            err.raise_if_any()


# --------------------------------------------------------------------------------------------
# Columns: a field of an expanded block is one shared value or a list of per-entry values.


class _Const:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value: Any = value


Column = _Const | list[Any]


def _values(col: Column, n: int) -> Iterable[Any]:
    return repeat(col.value, n) if isinstance(col, _Const) else col


def _distinct(col: Column) -> Iterable[Any]:
    """Each value once (for checks), cheap when the column is shared."""
    if isinstance(col, _Const):
        return (col.value,)
    return dict.fromkeys(col)


#: What rendering a template can raise: a format spec that does not fit the value
#: (``{s:03d}`` of a string), or an int too large for a float format (``{i:.2f}``).
_FORMAT_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError)


class _Renderer:
    """Renders templates over an entry's combinations, reporting format errors located.
    Estimates first (:meth:`size`) what rendering will make, for the budget."""

    def __init__(self, entry: _Entry, combos: Combinations | None, interned: dict[Any, Any],
                 budget: _Budget) -> None:
        self.entry = entry
        self.combos = combos
        self.names: tuple[str, ...] = combos.names if combos is not None else ()
        self.interned = interned
        self.budget = budget
        self._templates: dict[str, Template | None] = {}
        self._widths: list[int] | None = None

    def intern(self, value: T) -> T:
        return cast(T, self.interned.setdefault(value, value))

    def template(self, key: str, text: str) -> Template | None:
        """``text`` compiled (once); None, reported, if a format spec is refused."""
        if text in self._templates:
            return self._templates[text]
        template: Template | None = None
        try:
            template = Template.compile(text, self.names)
        except ParameterError as exc:
            self.entry.fail(key, f"cannot format {shown(text)}: {exc}")
        self._templates[text] = template
        return template

    def varies(self, key: str, text: str) -> bool:
        """Whether ``text`` renders differently per combination."""
        if self.combos is None:
            return False
        template = self.template(key, text)
        return template is not None and not template.constant

    def bound(self, key: str, text: str) -> int:
        """The most characters one rendering of ``text`` can have."""
        template = self.template(key, text) if self.combos is not None else None
        if template is None or template.constant:
            return len(text)
        if self._widths is None:
            assert self.combos is not None
            self._widths = [self.budget.width(v) for v in self.combos.values]
        return template.size_bound(self._widths)

    def size(self, key: str, texts: Iterable[str]) -> int:
        """What rendering ``texts`` for every combination makes (constants are shared: 0)."""
        if self.combos is None:
            return 0
        per = sum(self.bound(key, text) for text in texts if self.varies(key, text))
        return per * self.combos.count()

    def scalar(self, key: str, text: str) -> Column:
        if self.combos is None:
            return _Const(text)
        template = self.template(key, text)
        if template is None or template.constant:
            return _Const(text)
        try:
            return list(self.combos.render_all(template))
        except _FORMAT_ERRORS as exc:
            self.entry.fail(key, f"cannot format {shown(text)}: {exc}")
            return _Const(text)

    def many(self, key: str, texts: Sequence[str]) -> Column:
        """A list field: one tuple per combination (shared when nothing varies)."""
        if not texts:
            return _Const(EMPTY)
        cols = [self.scalar(key, t) for t in texts]
        if all(isinstance(c, _Const) for c in cols):
            return _Const(self.intern(tuple(cast(_Const, c).value for c in cols)))
        assert self.combos is not None
        n = len(self.combos)
        return list(zip(*(_values(c, n) for c in cols), strict=True))


def _union_column(col: Column) -> tuple[Any, ...]:
    """All values of a list column, in first-seen order (aggregating entries)."""
    if isinstance(col, _Const):
        return cast(tuple[Any, ...], col.value)
    return tuple(dict.fromkeys(chain.from_iterable(col)))


def _merge(a: Column, b: Column, n: int, interned: dict[Any, Any]) -> Column:
    """Per-entry ordered union of two tuple columns."""
    if isinstance(b, _Const) and not b.value:
        return a
    if isinstance(a, _Const) and not a.value:
        return b
    if isinstance(a, _Const) and isinstance(b, _Const):
        merged = tuple(dict.fromkeys((*a.value, *b.value)))
        return _Const(interned.setdefault(merged, merged))
    return [
        tuple(dict.fromkeys((*x, *y)))
        for x, y in zip(_values(a, n), _values(b, n), strict=True)
    ]


def _bulk_build(cls: type[T], n: int, cols: Mapping[str, Column]) -> list[T]:
    """Build ``n`` frozen slotted dataclass instances column by column.

    Why: the generated ``__init__`` of a frozen dataclass costs ~3 us per job (one
    ``object.__setattr__`` per field); setting each slot with its member descriptor in a
    C-level ``map`` is several times faster for a million jobs. Every slot is set."""
    new = cast(Callable[[type[T]], T], object.__new__)
    objs = list(map(new, repeat(cls, n)))
    for f in fields(cast(Any, cls)):
        setter = getattr(cls, f.name).__set__
        deque(map(setter, objs, _values(cols[f.name], n)), maxlen=0)
    return objs

"""Parameter values and templates: how one job definition becomes many.

Torc lets a job (or file, or user_data) carry ``parameters`` such as ``i: "1:100"`` or
``lr: "[0.001,0.01]"``; every combination of values (``product``, the default, or ``zip``)
yields one expanded entry whose strings have ``{i}`` / ``{i:03d}`` / ``{lr:.4f}`` replaced.

Why this module is shaped the way it is:

* A spec may expand to a million jobs, so a template is compiled **once** per job definition
  into a Python positional format string (``"task_{0:03d}"``) and rendered with the C-level
  ``str.format`` through ``map``/``starmap``. No regex runs per expanded job.
* Integer ranges stay ``range`` objects (no list of half a million ints is built).
* Only ``{name}`` / ``{name:spec}`` where ``name`` is one of the entry's own parameters is a
  placeholder. Everything else is literal, so shell text such as ``${HOME}``,
  ``awk '{print $1}'`` or ``${files.input.x}`` passes through untouched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import product, repeat, starmap

from .checks import shown, text_problem
from .errors import SpecError

ParamValue = int | float | str
#: The values of one parameter. ``range`` for integer ranges, a tuple otherwise.
ParamValues = range | tuple[ParamValue, ...]

PARAMETER_MODES = ("product", "zip")

# A placeholder candidate: {name} or {name:spec}. Specs cannot contain braces.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")

#: Float ranges include their end when it lies within this many steps of the last value.
FLOAT_RANGE_EPSILON = 1e-9
#: A placeholder's format width or precision (``{i:08d}``, ``{x:.3f}``) may be at most this:
#: ``{i:0999999999d}`` renders a 1 GB string per job.
MAX_FORMAT_WIDTH = 1000
#: The mini-language of a format spec: [[fill]align][sign][z][#][0][width][grouping]
#: [.precision][type]. Groups: width, grouping, precision, type.
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)([,_]?)(?:\.(\d+))?([bcdeEfFgGnosxX%]?)", re.DOTALL
)
#: Longer integers are refused: Python parses them in quadratic time (and refuses past 4300
#: digits with a ValueError), and a parameter has no use for them.
MAX_INT_DIGITS = 1000


class ParameterError(ValueError):
    """A single parameter value is malformed; the caller adds where it was found."""


def _int(text: str) -> int:
    digits = len(text.lstrip("+-"))
    if digits > MAX_INT_DIGITS:
        raise ParameterError(f"a number of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _scalar(text: str) -> ParamValue:
    """A bare list item or scalar: an int if it looks like one, then a float, else the text.
    Numbers are bounded: at most MAX_INT_DIGITS digits, floats finite (``1e400`` is inf)."""
    if _INT.fullmatch(text):
        return _int(text)
    if _FLOAT.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            raise ParameterError(f"{text} is not a finite number")
        return value
    return text


def _decimals(text: str) -> int:
    """Digits after the decimal point as written, so ``0.1`` steps print as ``0.3``, not
    ``0.30000000000000004``."""
    mantissa, _, exponent = text.lower().partition("e")
    digits = len(mantissa.partition(".")[2])
    return max(0, digits - int(exponent or 0))


def value_count(values: ParamValues) -> int:
    """How many values a parameter takes, however many that is.

    Why not ``len``: a range such as ``1:99999999999999999999`` is valid Python, but its
    ``len()`` raises OverflowError (more than fits a C ssize_t). Counting it must neither
    fail nor materialize it: that is how the parser refuses it."""
    if isinstance(values, range):
        step = values.step
        if step > 0:
            return max(0, (values.stop - values.start + step - 1) // step)
        return max(0, (values.start - values.stop - step - 1) // -step)
    return len(values)


def _too_many(text: str, count: int, max_values: int | None) -> None:
    if max_values is not None and count > max_values:
        raise ParameterError(f"{text!r} has {count} values, more than the limit of {max_values}")


def _parse_range(text: str, max_values: int | None) -> ParamValues:
    parts = [p.strip() for p in text.split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ParameterError(f"bad range {text!r} (expected 'start:end' or 'start:end:step')")
    if all(_INT.fullmatch(p) for p in parts):
        try:
            start, end = _int(parts[0]), _int(parts[1])
            step = _int(parts[2]) if len(parts) == 3 else 1
        except ParameterError as exc:
            raise ParameterError(f"bad range {shown(text)}: {exc}") from None
        if step == 0:
            raise ParameterError(f"bad range {text!r}: step must not be 0")
        values = range(start, end + (1 if step > 0 else -1), step)
        if not values:
            raise ParameterError(f"bad range {text!r}: it is empty")
        _too_many(text, value_count(values), max_values)
        return values
    if not all(_FLOAT.fullmatch(p) for p in parts):
        raise ParameterError(f"bad range {text!r}: start, end and step must be numbers")
    if len(parts) == 2:
        raise ParameterError(f"bad range {text!r}: a float range needs a step")
    fstart, fend, fstep = (float(p) for p in parts)
    if fstep == 0 or not all(math.isfinite(x) for x in (fstart, fend, fstep)):
        raise ParameterError(f"bad range {text!r}: step must be a finite non-zero number")
    span = (fend - fstart) / fstep
    if span < -FLOAT_RANGE_EPSILON:
        raise ParameterError(f"bad range {text!r}: it is empty")
    if not math.isfinite(span):  # e.g. -1e308:1e308:1: more values than a float can count
        raise ParameterError(f"bad range {text!r}: it has too many values")
    # The count is known before a single value is made: a float range is materialized.
    count = math.floor(span + FLOAT_RANGE_EPSILON) + 1
    _too_many(text, count, max_values)
    places = max(_decimals(p) for p in parts)
    return tuple(round(fstart + k * fstep, places) for k in range(count))


def _split_list(body: str) -> list[str]:
    """Split ``a, 'b,c', "d"`` on top-level commas, keeping quoted items whole."""
    items: list[str] = []
    current: list[str] = []
    quote = ""
    for ch in body:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch == ",":
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if quote:
        raise ParameterError("unterminated quote")
    tail = "".join(current).strip()
    if tail or items:
        items.append(tail)
    return items


def _parse_list_text(text: str) -> tuple[ParamValue, ...]:
    body = text.strip()[1:-1]
    try:
        raw = _split_list(body)
    except ParameterError as exc:
        raise ParameterError(f"bad list {text!r}: {exc}") from None
    values: list[ParamValue] = []
    for item in raw:
        if not item:
            raise ParameterError(f"bad list {text!r}: empty item")
        if len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
            values.append(item[1:-1])
            continue
        try:
            values.append(_scalar(item))
        except ParameterError as exc:
            raise ParameterError(f"bad list {shown(text)}: {exc}") from None
    if not values:
        raise ParameterError(f"bad list {text!r}: it is empty")
    return tuple(values)


def parse_parameter_value(value: object, *, max_values: int | None = None) -> ParamValues:
    """The values a parameter takes. Accepts Torc's forms: ``"1:100"`` (inclusive ints),
    ``"0:100:10"``, ``"0.0:1.0:0.1"`` (floats, end included within epsilon), ``"[1,5,10]"``,
    ``"['adam','sgd']"``, ``"[train, test]"``, a YAML/JSON list of scalars (e.g. the lines of
    an inlined ``@file``), or a single scalar. Raises :class:`ParameterError`, also for more
    than ``max_values`` values (counted before a range is made)."""
    if isinstance(value, bool):
        raise ParameterError(f"expected a string or list, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(f"expected a finite number, got {value!r}")
    if isinstance(value, int | float):
        return (value,)
    if isinstance(value, list | tuple):
        out: list[ParamValue] = []
        for k, item in enumerate(value):
            if isinstance(item, str):
                problem = text_problem(item)
                if problem is not None:
                    raise ParameterError(f"item {k}: {problem}")
            elif isinstance(item, bool) or not isinstance(item, int | float):
                raise ParameterError(f"list items must be numbers or strings, got {item!r}")
            elif isinstance(item, float) and not math.isfinite(item):
                raise ParameterError(f"list items must be finite numbers, got {item!r}")
            out.append(item)
        if not out:
            raise ParameterError("the list of values is empty")
        if max_values is not None and len(out) > max_values:
            raise ParameterError(
                f"the list has {len(out)} values, more than the limit of {max_values}"
            )
        return tuple(out)
    if not isinstance(value, str):
        raise ParameterError(f"expected a string or list, got {type(value).__name__}")
    problem = text_problem(value)  # its items and renderings are parts of it
    if problem is not None:
        raise ParameterError(problem)
    text = value.strip()
    if text.startswith("@"):
        raise ParameterError(f"value file {text!r} was not inlined")
    if text.startswith("["):
        if not text.endswith("]"):
            raise ParameterError(f"bad list {value!r}: missing ']'")
        values = _parse_list_text(text)
        _too_many(text, len(values), max_values)
        return values
    if ":" in text:
        return _parse_range(text, max_values)
    if not text:
        raise ParameterError("empty value")
    return (_scalar(text),)


def placeholder_names(text: str) -> set[str]:
    """Names that appear as ``{name}`` or ``{name:spec}`` in ``text`` (parameter candidates)."""
    return {m.group(1) for m in _PLACEHOLDER.finditer(text)}


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _format_number(digits: str, what: str) -> int:
    if len(digits) > 18:  # int() of 5000 digits is slow (and refused past 4300)
        raise ParameterError(f"format {what} of {len(digits)} digits is more than "
                             f"{MAX_FORMAT_WIDTH}")
    number = int(digits or "0")
    if number > MAX_FORMAT_WIDTH:
        raise ParameterError(f"format {what} {number} is more than {MAX_FORMAT_WIDTH}")
    return number


@dataclass(frozen=True, slots=True)
class _Slot:
    """One placeholder: which parameter, and what its format spec allows it to add."""

    k: int
    width: int
    precision: int
    kind: str  # the presentation type ('d', 'f', 'x', ...; '' for none)
    grouping: bool

    @classmethod
    def parse(cls, k: int, spec: str | None) -> _Slot:
        """Raises :class:`ParameterError` for a width or precision past MAX_FORMAT_WIDTH."""
        if not spec:
            return cls(k, 0, 0, "", False)
        m = _FORMAT_SPEC.fullmatch(spec)
        if m is None:  # not a valid spec (rendering will say so): bound every number in it
            numbers = [_format_number(d, "width") for d in re.findall(r"\d+", spec)]
            most = max(numbers, default=0)
            return cls(k, most, most, "", True)
        width, grouping, precision, kind = m.groups()
        if kind == "c":
            raise ParameterError(
                "format type 'c' is not supported (it makes characters of integers)"
            )
        # Float types print 6 digits after the point unless told; 'n' groups per the locale.
        digits = _format_number(precision, "precision") if precision else 0
        if not precision and kind and kind in "eEfFgG%":
            digits = 6
        return cls(k, _format_number(width, "width"), digits, kind,
                   bool(grouping) or kind == "n")

    def bound(self, natural: int) -> int:
        """The most characters this placeholder renders to, for values whose ``str()`` is at
        most ``natural`` long (see :func:`value_width`). Generous, never short: binary takes
        up to 3.4 digits per decimal one, grouping a separator per 3 digits, and 8 more for
        a sign, a ``0x``, a point, an exponent or a ``%``."""
        n = natural * 4 if self.kind in ("b", "o") else natural
        if self.grouping:
            n += n // 3 + 1
        # Zero padding with grouping may pass the width by a separator ('-0,001' for 05,).
        return max(self.width + 2, n + self.precision + 8)


def value_width(values: ParamValues) -> int:
    """An upper bound of ``len(str(v))`` over the values, also for floats in ``f`` format
    (``1e300`` prints 301 digits there): what :meth:`Template.size_bound` needs per
    parameter. Costs one pass over a tuple; a range is two numbers."""
    if isinstance(values, range):
        last = values.start + (value_count(values) - 1) * values.step
        return max(len(str(values.start)), len(str(last)))
    width = 0
    strs = [v for v in values if isinstance(v, str)]
    if strs:
        width = max(map(len, strs))
    ints = [v for v in values if isinstance(v, int)]
    if ints:
        width = max(width, len(str(max(ints))), len(str(min(ints))))
    floats = [v for v in values if isinstance(v, float)]
    if floats:
        # repr of a float is at most 24 characters (measured when there are few); 'f' prints
        # every integer digit, and a sign and a point.
        longest = max(map(len, map(repr, floats))) if len(floats) <= 10_000 else 24
        width = max(width, longest, len(str(int(max(map(abs, floats))))) + 2)
    return width


@dataclass(frozen=True, slots=True)
class Template:
    """A string compiled against an ordered list of parameter names.

    ``fmt`` is a positional ``str.format`` string (``{0:03d}`` refers to the first parameter);
    ``used`` lists which parameters appear. A template that uses none is ``constant`` and
    renders to ``text`` itself (the same object, so expanded entries share it). ``literal``
    and ``slots`` (the placeholders' format specs) bound a rendering's length before any is
    made (:meth:`size_bound`).
    """

    text: str
    fmt: str
    used: frozenset[int]
    literal: int = 0
    slots: tuple[_Slot, ...] = ()

    @property
    def constant(self) -> bool:
        return not self.used

    @classmethod
    def compile(cls, text: str, names: Sequence[str]) -> Template:
        """Raises :class:`ParameterError` for a format spec wider than MAX_FORMAT_WIDTH or of
        type ``c``."""
        position = {name: k for k, name in enumerate(names)}
        pieces: list[str] = []
        slots: list[_Slot] = []
        literal = 0
        last = 0
        for m in _PLACEHOLDER.finditer(text):
            k = position.get(m.group(1))
            if k is None:
                continue
            pieces.append(_escape(text[last : m.start()]))
            literal += m.start() - last
            spec = m.group(2)
            slots.append(_Slot.parse(k, spec))
            pieces.append(f"{{{k}}}" if spec is None else f"{{{k}:{spec}}}")
            last = m.end()
        if not slots:
            return cls(text, "", frozenset(), len(text))
        pieces.append(_escape(text[last:]))
        literal += len(text) - last
        used = frozenset(slot.k for slot in slots)
        return cls(text, "".join(pieces), used, literal, tuple(slots))

    def size_bound(self, widths: Sequence[int]) -> int:
        """The most characters one rendering can have, given for each parameter the
        :func:`value_width` of its values. Arithmetic: nothing is rendered."""
        return self.literal + sum(slot.bound(widths[slot.k]) for slot in self.slots)

    def render(self, values: Sequence[ParamValue]) -> str:
        """One rendering. Raises ValueError/TypeError on a format spec that does not fit."""
        if not self.used:
            return self.text
        return self.fmt.format(*values)


class Combinations:
    """The combinations of a set of parameters, re-iterable without materializing them.

    Why not a list of dicts: a million combinations as dicts cost hundreds of MB; here a
    combination is a tuple produced on the fly by ``itertools.product``/``zip``.
    """

    __slots__ = ("mode", "names", "values")

    def __init__(self, names: Sequence[str], values: Sequence[ParamValues], mode: str) -> None:
        self.names: tuple[str, ...] = tuple(names)
        self.values: tuple[ParamValues, ...] = tuple(values)
        self.mode = mode

    def count(self) -> int:
        """The number of combinations, computed, not enumerated (and never too large to say:
        ``len()`` of 10**20 combinations would raise OverflowError)."""
        if not self.values:
            return 1
        if self.mode == "zip":
            return value_count(self.values[0])
        return math.prod(map(value_count, self.values))

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[tuple[ParamValue, ...]]:
        if self.mode == "zip":
            return zip(*self.values, strict=True)
        return product(*self.values)

    def render_all(self, template: Template) -> Iterable[str]:
        """Every rendering of ``template``, in combination order, as a lazy C-level loop."""
        if not template.used:
            return repeat(template.text, len(self))
        if len(self.values) == 1:
            return map(template.fmt.format, self.values[0])
        return starmap(template.fmt.format, iter(self))


def make_combinations(
    params: Mapping[str, ParamValues], mode: str = "product"
) -> Combinations:
    """Combine parameters; ``zip`` needs equal lengths (raises :class:`ParameterError`)."""
    if mode not in PARAMETER_MODES:
        raise ParameterError(f"parameter_mode must be 'product' or 'zip', got {mode!r}")
    names = list(params)
    values = [params[n] for n in names]
    if mode == "zip" and values:
        first = value_count(values[0])
        for name, vals in zip(names[1:], values[1:], strict=True):
            if value_count(vals) != first:
                raise ParameterError(
                    "all parameters must have the same number of values in zip mode: "
                    f"{names[0]!r} has {first}, {name!r} has {value_count(vals)}"
                )
    return Combinations(names, values, mode)


def format_template(text: str, params: Mapping[str, ParamValue]) -> str:
    """Render ``text`` with one set of parameter values (convenience for tests and tools)."""
    names = list(params)
    return Template.compile(text, names).render([params[n] for n in names])


def expand_parameters(
    params: Mapping[str, object], mode: str = "product"
) -> list[dict[str, ParamValue]]:
    """All combinations as dicts. For small inputs and tests only; expansion inside the
    parser never builds per-combination dicts."""
    try:
        parsed = {name: parse_parameter_value(v) for name, v in params.items()}
        combos = make_combinations(parsed, mode)
    except ParameterError as exc:
        raise SpecError([str(exc)]) from None
    return [dict(zip(combos.names, c, strict=True)) for c in combos]

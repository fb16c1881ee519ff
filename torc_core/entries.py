"""Located, typed access to a spec document's mappings, and the error list that collects
every problem found (so a spec with ten mistakes is answered with ten located messages, not
the first one).

Shared by the spec parser (:mod:`torc_core.parse`) and the settings sections
(:mod:`torc_core.settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from .checks import INT64_MIN, check_int64, text_problem, type_name
from .errors import SpecError

#: At most this many messages (then "... and N more errors").
MAX_ERRORS = 100

T = TypeVar("T")


class Errors:
    """Collects located messages; one SpecError with all of them at the end."""

    __slots__ = ("dropped", "items")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append(message)
        else:
            self.dropped += 1

    def raise_if_any(self) -> None:
        if self.items:
            items = list(self.items)
            if self.dropped:
                items.append(f"... and {self.dropped} more errors")
            raise SpecError(items)


MISSING: Any = object()


class Entry:
    """Typed, located access to one mapping of the document."""

    __slots__ = ("data", "err", "where")

    def __init__(self, data: Mapping[str, Any], where: str, err: Errors) -> None:
        self.data = data
        self.where = where
        self.err = err

    def fail(self, key: str, problem: str) -> None:
        self.err.add(f"{self.where}: {key}: {problem}" if self.where else f"{key}: {problem}")

    def check_keys(
        self, allowed: frozenset[str], extra: Callable[[str], bool] | None = None
    ) -> None:
        for key in self.data:
            if key not in allowed and not (
                extra is not None and isinstance(key, str) and extra(key)
            ):
                prefix = f"{self.where}: " if self.where else ""
                self.err.add(f"{prefix}unknown key {key!r}")

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key, MISSING)
        if value is MISSING or value is None:
            if required:
                self.fail(key, "is required")
            return MISSING
        return value

    def get_str(self, key: str, default: T, required: bool = False) -> str | T:
        value = self._get(key, required)
        if value is MISSING:
            return default
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {type_name(value)}")
            return default
        if not value.isascii():
            problem = text_problem(value)
            if problem is not None:
                self.fail(key, problem)
                return default
        return value

    def get_int(self, key: str, default: T, minimum: int = INT64_MIN) -> int | T:
        """An integer the store can hold: ``minimum`` up to INT64_MAX."""
        value = self._get(key, False)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {type_name(value)}")
            return default
        problem = check_int64(value, minimum=minimum)
        if problem is not None:
            self.fail(key, problem)
            return default
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"expected a boolean, got {type_name(value)}")
            return default
        return value

    def str_list(self, key: str) -> list[str]:
        value = self._get(key, False)
        if value is MISSING:
            return []
        if isinstance(value, str):
            self.fail(key, "expected a list of strings, got string")
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, "expected a list of strings")
            return []
        if not all(map(str.isascii, value)):
            problems = [(k, text_problem(v)) for k, v in enumerate(value)]
            for k, problem in problems:
                if problem is not None:
                    self.fail(f"{key}[{k}]", problem)
            if any(problem is not None for _, problem in problems):
                return []
        return cast(list[str], value)

    def mapping(self, key: str) -> dict[str, Any] | None:
        value = self._get(key, False)
        if value is MISSING:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type_name(value)}")
            return None
        return cast(dict[str, Any], value)

    def one_of(self, key: str, choices: Sequence[str], default: T) -> str | T:
        value = self.get_str(key, default)
        if isinstance(value, str) and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
            return default
        return value


def entry_where(section: str, k: int, entry: object) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return f"{section}[{k}] {name!r}" if isinstance(name, str) else f"{section}[{k}]"


def entries(doc: Entry, section: str) -> list[Entry]:
    value = doc.data.get(section)
    if value is None:
        return []
    if not isinstance(value, list):
        doc.fail(section, f"expected a list, got {type_name(value)}")
        return []
    out: list[Entry] = []
    for k, item in enumerate(value):
        where = entry_where(section, k, item)
        if not isinstance(item, dict):
            doc.err.add(f"{where}: expected a mapping, got {type_name(item)}")
            continue
        out.append(Entry(cast(dict[str, Any], item), where, doc.err))
    return out


def check_unique(entries: Iterable[tuple[str, str]], noun: str, err: Errors) -> set[str]:
    """Names must be unique within a section. ``entries`` are (where, name)."""
    seen: set[str] = set()
    for where, name in entries:
        if name in seen:
            err.add(f"{where}: duplicate {noun} name {name!r}")
        seen.add(name)
    return seen

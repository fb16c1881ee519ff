"""Request validation: every request checked in full, against its route's declared schema,
before anything changes.

Theory of operation
-------------------
A route declares its body as a JSON Schema (:mod:`torc_net.routes`); :func:`compile_schema`
turns it once into a checker, so the document the server publishes (``/openapi.json``) is
exactly what it enforces. A checker walks the body and raises :class:`ApiError` (400) with a
message that names the field by its path (``results[3].job_id: expected integer, got
string``); it returns the body with defaults filled in and integral floats made integers.

Rule 1: values the store cannot hold never pass. Integers are limited to SQLite's signed 64
bits unless the schema says narrower, numbers must be finite, and strings must be valid text
(no lone surrogate from a ``\\ud800`` escape): :mod:`torc_core.checks` says how, for the
spec parser too.

Rule 2: bounded work. A body is at most ``MAX_BODY_BYTES`` (413) and nested at most
``max_depth`` levels (400): JSON the decoder cannot even nest (100,000 levels) is refused the
same way. Free-form values (user data, a spec) are walked for depth only; what the server
keeps of a spec is the spec parser's to check, with its own bounds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from torc_core.checks import INT64_MAX, INT64_MIN, int_text, shown, text_problem

from .jsonbytes import json_loads

MAX_PAGE = 100_000
MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64


class ApiError(Exception):
    """An error answer: HTTP status, short ``error`` and a ``detail`` (string or list)."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str | list[str] = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})


def bad_request(detail: str) -> ApiError:
    return ApiError(400, "bad request", detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, "not found", detail)


_JSON_TYPES: dict[type, str] = {type(None): "null", bool: "boolean", int: "integer",
                                float: "number", str: "string", list: "array", dict: "object"}


def type_name(value: object) -> str:
    """The JSON Schema name of a value's type, for messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


#: Where a value is in a body, for messages: a path (``results[3].job_id``), kept as nested
#: ``(parent, key or index)`` pairs and written out only for an error; a check is run on
#: every field of every item, and most bodies have no error.
Where = str | tuple[Any, str | int | None]


def where_text(where: Where) -> str:
    """``where`` written out: ``results[3].job_id``, ``files (key)``; the empty path is
    ``body``."""
    keys: list[str | int | None] = []
    while type(where) is tuple:
        where, key = where
        keys.append(key)
    text = where
    assert type(text) is str
    for key in reversed(keys):
        if key is None:  # the keys of a map (``propertyNames``)
            text = f"{text or 'body'} (key)"
        elif type(key) is int:
            text = f"{text}[{key}]"
        else:
            text = f"{text}.{key}" if text else str(key)
    return text or "body"


# ---------------------------------------------------------------------------------------------
# Decoding


#: Bodies with at most this many ``[`` and ``{`` are decoded by orjson (:func:`decode_body`):
#: below it orjson and :mod:`json` (which refuses past about 1,000 levels) parse alike.
_ORJSON_MAX_OPENERS = 500


def decode_body(raw: bytes, max_depth: int) -> Any:
    """JSON text to a value, or a located 400. An empty body is an empty object. Decoded by
    :func:`torc_net.jsonbytes.json_loads` (orjson 3.6-6.8 times faster than :mod:`json` on
    claim bodies: BENCHMARKS.md), so that orjson only ever speeds up what both accept alike."""
    if not raw or not raw.strip():
        return {}
    try:
        return json_loads(raw, max_openers=_ORJSON_MAX_OPENERS, parse_constant=_not_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise bad_request(f"body: nested deeper than {max_depth} levels") from None


def _not_json(name: str) -> Any:
    """Python's decoder takes NaN and Infinity, which JSON does not have (nor the store)."""
    raise bad_request(f"malformed JSON: {name} is not a JSON number")


def check_depth(value: Any, path: Where, levels: int, max_depth: int) -> None:
    """Raise a 400 if ``value`` nests more than ``levels`` more containers (iteratively: a
    recursive walk is what the limit protects against), or holds a number that is not finite
    (``1e400`` decodes as infinity)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is dict:
            children = item.values()
        elif kind is list:
            children = item
        else:
            continue
        if depth > levels:
            where = _locate(value, where_text(path),
                            lambda v, d: d > levels and type(v) in (dict, list))
            raise bad_request(f"{where}: nested deeper than {max_depth} levels")
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
            elif kind is float and not math.isfinite(child):
                where = _locate(value, where_text(path), lambda v, d: type(v) is float
                                and not math.isfinite(v))
                raise bad_request(f"{where}: a number out of range ({child})")


def _locate(value: Any, path: str, bad: Callable[[Any, int], bool]) -> str:
    """The path of the first item ``bad(item, depth)`` finds (for messages only: the walk
    above keeps no paths, being made for the case where nothing is wrong)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, path or "body")]
    while stack:
        item, depth, where = stack.pop()
        if bad(item, depth):
            return where
        if type(item) is dict:
            stack.extend((v, depth + 1, f"{where}.{k}") for k, v in reversed(item.items()))
        elif type(item) is list:
            stack.extend((v, depth + 1, f"{where}[{i}]")
                         for i, v in reversed(list(enumerate(item))))
    return path or "body"


# ---------------------------------------------------------------------------------------------
# Schemas

#: A compiled schema: ``check(value, where, depth) -> value`` (``depth``: containers above it).
Check = Callable[[Any, Where, int], Any]


def _is_free_form(schema: Mapping[str, Any]) -> bool:
    return not any(k in schema for k in ("properties", "additionalProperties", "propertyNames",
                                         "items", "enum", "minimum", "maximum", "maxLength",
                                         "maxItems"))


def schema_types(schema: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """The types a schema allows besides null (``type``: a name or a list), and whether it
    allows null."""
    types = schema.get("type")
    allowed = () if types is None else (types,) if isinstance(types, str) else tuple(types)
    return tuple(t for t in allowed if t != "null"), "null" in allowed


def int_bounds(schema: Mapping[str, Any]) -> tuple[int, int]:
    """An integer schema's bounds, never beyond SQLite's signed 64 bits (Rule 1)."""
    return (max(int(schema.get("minimum", INT64_MIN)), INT64_MIN),
            min(int(schema.get("maximum", INT64_MAX)), INT64_MAX))


def search_pattern(pattern: str) -> str:
    """A schema's pattern as :func:`re.search` must be given it to search as JSON Schema says:
    a final ``$`` is the end of the text there, while Python's also matches before a last
    newline. (Our own patterns, the schema's, never a client's.)"""
    ending = pattern.endswith("$") and not pattern.endswith("\\$")
    return pattern[:-1] + "\\Z" if ending else pattern


def compile_schema(schema: Mapping[str, Any], max_depth: int = DEFAULT_MAX_DEPTH) -> Check:
    """A checker for the subset of JSON Schema the routes use: ``type`` (a name or a list),
    ``properties``, ``required``, ``default``, ``additionalProperties`` (a schema for every
    value of an object without ``properties``, with ``propertyNames`` for its keys), ``items``,
    ``minimum``, ``maximum``, ``enum``, ``minLength``, ``maxLength``, ``pattern``,
    ``maxItems``. A schema without structure (``{}``, or a bare
    ``{"type": "object"}``) is free-form: any JSON of that type, checked for depth only."""
    kinds, nullable = schema_types(schema)
    if len(kinds) > 1:
        raise ValueError(f"unsupported schema: several types {kinds}")
    kind = kinds[0] if kinds else None
    expected = " or ".join((*kinds, "null") if nullable else kinds)

    def refuse(value: Any, path: Where) -> None:
        """A value of another type: null where the schema allows it (each check calls this
        only when the type is wrong, so a nullable field costs nothing more), else a 400."""
        if value is None and nullable:
            return None
        raise bad_request(f"{where_text(path)}: expected {expected}, got {type_name(value)}")

    inner: Check
    if kind is None or (_is_free_form(schema) and kind in ("object", "array")):
        inner = _free_form(kind, max_depth, refuse)
    elif kind == "object":
        inner = _object(schema, max_depth, refuse)
    elif kind == "array":
        inner = _array(schema, max_depth, refuse)
    elif kind == "integer":
        inner = _integer(schema, refuse)
    elif kind == "number":
        inner = _number(schema, refuse)
    elif kind == "string":
        inner = _string(schema, refuse)
    elif kind == "boolean":
        def inner(value: Any, path: Where, depth: int) -> Any:
            if type(value) is not bool:
                return refuse(value, path)
            return value
    else:
        raise ValueError(f"unsupported schema type {kind!r}")
    return inner


def _free_form(kind: str | None, max_depth: int,
               refuse: Callable[[Any, Where], None]) -> Check:
    want = {"object": dict, "array": list, None: None}[kind]

    def check(value: Any, path: Where, depth: int) -> Any:
        if want is not None and type(value) is not want:
            return refuse(value, path)
        if type(value) is dict or type(value) is list:
            check_depth(value, path, max_depth - depth, max_depth)
        return value

    return check


def _object(schema: Mapping[str, Any], max_depth: int,
            refuse: Callable[[Any, Where], None]) -> Check:
    props = {k: compile_schema(v, max_depth) for k, v in schema.get("properties", {}).items()}
    required = tuple(k for k in props if k in schema.get("required", ()))  # schema's order
    unknown = set(schema.get("required", ())) - set(props)
    if unknown:
        raise ValueError(f"unsupported schema: required {sorted(unknown)} without a schema")
    defaults = {k: v["default"] for k, v in schema.get("properties", {}).items()
                if "default" in v}
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) and not props:
        names = schema.get("propertyNames")
        return _map(compile_schema(extra, max_depth),
                    None if names is None else compile_schema(names, max_depth), max_depth, refuse)
    known = props.get
    num_props = len(props)

    def check(value: Any, path: Where, depth: int) -> Any:
        if type(value) is not dict:
            return refuse(value, path)
        if depth >= max_depth:
            raise bad_request(f"{where_text(path)}: nested deeper than {max_depth} levels")
        out = value
        below = depth + 1
        strangers = 0
        # In the body's order (the first problem in it is reported); a body names few of an
        # item's fields (a result: 6 of 18), so the walk is over what it gives.
        for key, given in value.items():
            sub = known(key)
            if sub is None:  # a field we do not know: ignored, but bounded
                strangers += 1
                if type(given) is dict or type(given) is list:
                    check_depth(given, (path, key), max_depth - below, max_depth)
                continue
            checked = sub(given, (path, key), below)
            if checked is not given:
                if out is value:
                    out = dict(value)
                out[key] = checked
        if len(value) - strangers == num_props:
            return out
        for key in required:
            if key not in value:
                raise bad_request(f"{where_text((path, key))}: required")
        # the defaults in one merge (given values win), not a store per absent field
        return {**defaults, **out} if defaults else out

    return check


def _map(value_check: Check, key_check: Check | None, max_depth: int,
         refuse: Callable[[Any, Where], None]) -> Check:
    """An object whose every value has one schema, and every key another (``propertyNames``;
    what a key means, e.g. which file it names, is the handler's to check)."""

    def check(value: Any, path: Where, depth: int) -> Any:
        if type(value) is not dict:
            return refuse(value, path)
        if depth >= max_depth:
            raise bad_request(f"{where_text(path)}: nested deeper than {max_depth} levels")
        out = value
        for key, given in value.items():
            if key_check is not None:
                key_check(key, (path, None), depth + 1)
            checked = value_check(given, (path, key), depth + 1)
            if checked is not given:
                if out is value:
                    out = dict(value)
                out[key] = checked
        return out

    return check


def _array(schema: Mapping[str, Any], max_depth: int,
           refuse: Callable[[Any, Where], None]) -> Check:
    item = compile_schema(schema.get("items", {}), max_depth)
    max_items = schema.get("maxItems")

    def check(value: Any, path: Where, depth: int) -> Any:
        if type(value) is not list:
            return refuse(value, path)
        if depth >= max_depth:
            raise bad_request(f"{where_text(path)}: nested deeper than {max_depth} levels")
        if max_items is not None and len(value) > max_items:
            raise bad_request(f"{where_text(path)}: at most {max_items} items, got {len(value)}")
        out = value
        below = depth + 1
        for k, given in enumerate(value):
            checked = item(given, (path, k), below)
            if checked is not given:
                if out is value:
                    out = list(value)
                out[k] = checked
        return out

    return check


def _integer(schema: Mapping[str, Any], refuse: Callable[[Any, Where], None]) -> Check:
    low, high = int_bounds(schema)

    def check(value: Any, path: Where, depth: int) -> Any:
        if type(value) is not int:
            if type(value) is float and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            else:
                return refuse(value, path)
        if value < low:
            raise bad_request(f"{where_text(path)}: must be >= {low}, got {int_text(value)}")
        if value > high:
            raise bad_request(f"{where_text(path)}: must be <= {high}, got {int_text(value)}")
        return value

    return check


def _number(schema: Mapping[str, Any], refuse: Callable[[Any, Where], None]) -> Check:
    low = schema.get("minimum")

    def check(value: Any, path: Where, depth: int) -> Any:
        kind = type(value)
        if kind is int:
            try:
                value = float(value)
            except OverflowError:
                raise bad_request(f"{where_text(path)}: number out of range, got "
                                  f"{int_text(value)}") from None
        elif kind is not float or not math.isfinite(value):
            return refuse(value, path)
        if low is not None and value < low:
            raise bad_request(f"{where_text(path)}: must be >= {low}, got {value}")
        return value

    return check


def _string(schema: Mapping[str, Any], refuse: Callable[[Any, Where], None]) -> Check:
    enum = schema.get("enum")
    choices = None if enum is None else [c for c in enum if c is not None]
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    pattern = schema.get("pattern")
    #: what the pattern means, said instead of the pattern itself (JSON Schema's description)
    means = schema.get("description")
    search = None if pattern is None else re.compile(search_pattern(pattern)).search

    def check(value: Any, path: Where, depth: int) -> Any:
        if type(value) is not str:
            return refuse(value, path)
        if choices is not None and value not in choices:
            raise bad_request(f"{where_text(path)}: expected one of {', '.join(choices)}, got "
                              f"{shown(value)}")
        if len(value) < low:
            raise bad_request(f"{where_text(path)}: must not be empty" if low == 1
                              else f"{where_text(path)}: at least {low} characters")
        if high is not None and len(value) > high:
            raise bad_request(f"{where_text(path)}: at most {high} characters, got {len(value)}")
        problem = text_problem(value)
        if problem:
            raise bad_request(f"{where_text(path)}: {problem}")
        if search is not None and search(value) is None:
            rule = f"must be {means}" if means else f"must match {pattern}"
            raise bad_request(f"{where_text(path)}: {rule}, got {shown(value)}")
        return value

    return check


# ---------------------------------------------------------------------------------------------
# Query strings


def query_int(args: Mapping[str, str], key: str, default: int, *,
              maximum: int = INT64_MAX) -> int:
    raw = args.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter {key}: expected integer, got {shown(raw)}") from None
    if value < 0:
        raise bad_request(f"query parameter {key}: must be >= 0, got {int_text(value)}")
    if value > maximum:
        raise bad_request(f"query parameter {key}: must be <= {maximum}, got "
                          f"{int_text(value)}")
    return value


def query_bool(args: Mapping[str, str], key: str) -> bool:
    raw = args.get(key)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise bad_request(f"query parameter {key}: expected true or false, got {shown(raw)}")
    return raw == "true"


def page_args(args: Mapping[str, str], default_limit: int) -> tuple[int, int]:
    return query_int(args, "offset", 0), query_int(args, "limit", default_limit, maximum=MAX_PAGE)

"""Typed decoding of request bodies: a runner's claim decoded and checked in C.

Why: a claim carries a result item per job (a dozen fields each); decoding it with orjson and
walking it with the compiled schema (:mod:`torc_net.validate`) costs 5-9 µs an item on this
machine, msgspec's typed decoder 1-1.5 µs, 2.5 with the dicts the handlers read
(BENCHMARKS.md, issue 17).

Theory of operation
-------------------
The route's JSON Schema stays the one description of a body: :func:`compile_decoder` builds
msgspec types from it (the subset :func:`~torc_net.validate.compile_schema` takes), and the
checker stays the judge. A body the typed decoder refuses, for any reason, is decoded and
checked again the usual way, which words the problem (``results[3].job_id: expected integer,
got string``) or accepts what msgspec is stricter about (an integral float where an integer is
due, fields the schema does not name). So msgspec only ever speeds up what both accept alike,
the rule :mod:`torc_net.jsonbytes` keeps for orjson.

Rule 1: what the typed decoder accepts, the checker accepts, with the same value: the same
bounds (integers within SQLite's 64 bits, numbers finite), enums, lengths and patterns;
defaults filled in; a field without a default left out when absent; no field the schema does
not name (they are refused here, so ignored and depth-bounded by the checker as before).

Rule 2: only schemas it can say exactly: a free-form value (a spec, user data) or a map has no
typed decoder (None), and its route is checked as before.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Optional, Union

import msgspec

from .validate import int_bounds, schema_types, search_pattern

#: ``decode(raw) -> body``: the body with defaults filled in, or :class:`Refused`.
Decoder = Callable[[bytes], Any]
_FLOAT_MAX = sys.float_info.max
_names = itertools.count()


class Refused(Exception):
    """The typed decoder does not take this body; the checker will say why, or take it."""


class _Inexpressible(Exception):
    pass


def compile_decoder(schema: Mapping[str, Any]) -> Decoder | None:
    """A typed decoder for bodies of ``schema`` (an object), or None (Rule 2)."""
    try:
        body_type = _type(schema)
    except _Inexpressible:
        return None
    decoder = msgspec.json.Decoder(body_type)
    to_builtins = msgspec.to_builtins

    def decode(raw: bytes) -> Any:
        try:
            return to_builtins(decoder.decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise Refused(str(exc)) from None

    return decode


def _type(schema: Mapping[str, Any]) -> Any:
    kinds, nullable = schema_types(schema)
    if len(kinds) != 1:
        raise _Inexpressible
    kind = kinds[0]
    out: Any
    if kind == "object":
        out = _struct(schema)
    elif kind == "array":
        if "items" not in schema:
            raise _Inexpressible
        out = list[_type(schema["items"])]  # type: ignore[misc]
        if "maxItems" in schema:
            out = Annotated[out, msgspec.Meta(max_length=schema["maxItems"])]
    elif kind == "integer":
        ge, le = int_bounds(schema)
        out = Annotated[int, msgspec.Meta(ge=ge, le=le)]
    elif kind == "number":  # finite: JSON's 1e400 is out of range, as the checker says
        low = schema.get("minimum")
        out = Annotated[float, msgspec.Meta(ge=-_FLOAT_MAX if low is None else low,
                                            le=_FLOAT_MAX)]
    elif kind == "string":
        out = _string(schema)
    elif kind == "boolean":
        out = bool
    else:
        raise _Inexpressible
    return Optional[out] if nullable else out  # noqa: UP045 (built at run time)


def _struct(schema: Mapping[str, Any]) -> Any:
    props = schema.get("properties")
    if not props or "additionalProperties" in schema or "propertyNames" in schema:
        raise _Inexpressible  # free-form, or a map
    required = set(schema.get("required", ()))
    fields: list[tuple[str, Any, Any]] = []
    for name, sub in props.items():
        typ = _type(sub)
        if "default" in sub:
            fields.append((name, typ, sub["default"]))
        elif name in required:
            fields.append((name, typ, msgspec.NODEFAULT))
        else:  # absent stays absent (to_builtins leaves UNSET fields out)
            fields.append((name, Union[typ, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
    return msgspec.defstruct(f"Body{next(_names)}", fields, kw_only=True,
                             forbid_unknown_fields=True)


def _string(schema: Mapping[str, Any]) -> Any:
    enum = schema.get("enum")
    if enum is not None:
        choices = tuple(c for c in enum if c is not None)
        if not choices or not all(isinstance(c, str) for c in choices):
            raise _Inexpressible
        if "minLength" in schema or "maxLength" in schema or "pattern" in schema:
            raise _Inexpressible
        return Literal[choices]
    meta: dict[str, Any] = {}
    if "minLength" in schema:
        meta["min_length"] = schema["minLength"]
    if "maxLength" in schema:
        meta["max_length"] = schema["maxLength"]
    if "pattern" in schema:  # searched as the checker searches it
        meta["pattern"] = search_pattern(schema["pattern"])
    return Annotated[str, msgspec.Meta(**meta)] if meta else str

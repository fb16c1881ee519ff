"""The typed decoder only speeds up what the checker accepts alike (torc_net.fastdecode,
Rule 1): whatever body it takes, the checker takes too, with the same value; whatever it does
not, the checker words (or takes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torc_core.checks import INT64_MAX, INT64_MIN
from torc_net.dispatch import body_reader
from torc_net.fastdecode import Refused, compile_decoder
from torc_net.routes import CLAIM_BODY, ROUTES
from torc_net.validate import ApiError, compile_schema, decode_body, int_bounds, schema_types

TYPED = [r for r in ROUTES if r.body is not None and compile_decoder(r.body) is not None]

#: values of any JSON type, and the edges the checks care about
_ODD = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, -1, 1, INT64_MAX, INT64_MAX + 1, INT64_MIN,
                                               INT64_MIN - 1, 2**64, 3.0, -0.0, 0.5, 1e308]),
    st.text(max_size=5), st.sampled_from(["\ud800", "a\udfffb", "\U0001f600", "é" * 3]),
    st.just([]), st.just({}), st.just([1, "x"]), st.just({"a": [1]}),
)


def _valid(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values ``schema`` allows, its edges included."""
    kinds, nullable = schema_types(schema)
    kind = kinds[0] if kinds else None
    out: st.SearchStrategy[Any]
    if kind == "object" and schema.get("properties"):
        props = schema["properties"]
        required = set(schema.get("required", ()))
        out = st.fixed_dictionaries(
            {k: _valid(v) for k, v in props.items() if k in required},
            optional={k: _valid(v) for k, v in props.items() if k not in required})
    elif kind == "array":
        out = st.lists(_valid(schema.get("items", {})), max_size=3)
    elif kind == "integer":
        low, high = int_bounds(schema)
        out = st.one_of(st.integers(low, min(high, low + 10**6)), st.sampled_from([low, high]))
    elif kind == "number":
        low = schema.get("minimum", -1e308)
        out = st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=low),
                        st.integers(max(int(low), -10), 10**6), st.just(1e308))
    elif kind == "string":
        enum = [c for c in schema.get("enum", ()) if c is not None]
        low, high = schema.get("minLength", 0), schema.get("maxLength", 8)
        out = st.sampled_from(enum) if enum else st.one_of(
            st.text(min_size=low, max_size=max(low, min(high, 8))), st.just("x" * high))
    elif kind == "boolean":
        out = st.booleans()
    else:
        out = _ODD
    return st.one_of(st.none(), out) if nullable else out


def _odd_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value just outside ``schema``, or of any type."""
    kinds, _ = schema_types(schema)
    edges: list[Any] = []
    if kinds == ("integer",):
        low, high = int_bounds(schema)
        edges = [low - 1, high + 1, float(low) if abs(low) < 2**53 else 2.0]
    elif kinds == ("number",) and "minimum" in schema:
        edges = [schema["minimum"] - 1, schema["minimum"] - 1e-9]
    elif kinds == ("string",):
        edges = ["x" * (schema.get("maxLength", 8) + 1), "a\ud800", "other"]
    return st.one_of(st.sampled_from(edges), _ODD) if edges else _ODD


def _leaves(value: Any, schema: dict[str, Any], at: tuple[Any, ...] = ()) \
        -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every place in ``value`` with the schema that governs it."""
    out = [(at, schema)]
    kinds, _ = schema_types(schema)
    if isinstance(value, dict) and kinds == ("object",):
        for k, v in value.items():
            out += _leaves(v, schema.get("properties", {}).get(k, {}), (*at, k))
    elif isinstance(value, list) and kinds == ("array",):
        for i, v in enumerate(value):
            out += _leaves(v, schema.get("items", {}), (*at, i))
    return out


@st.composite
def _near(draw: Any, schema: dict[str, Any]) -> Any:
    """A valid body, or one with one value made odd (or one field more)."""
    body = draw(_valid(schema))
    how = draw(st.sampled_from(["valid", "odd", "odd", "extra"]))
    if how == "valid":
        return body
    at, sub = draw(st.sampled_from(_leaves(body, schema)))
    if how == "extra":
        if not isinstance(draw_target := _get(body, at), dict):
            return body
        draw_target["unknown_field"] = draw(_ODD)
        return body
    odd = draw(_odd_for(sub))
    if not at:
        return odd
    _get(body, at[:-1])[at[-1]] = odd
    return body


def _get(value: Any, at: tuple[Any, ...]) -> Any:
    for key in at:
        value = value[key]
    return value


def _checked(schema: dict[str, Any], raw: bytes) -> Any:
    return compile_schema(schema, 64)(decode_body(raw, 64), "", 0)


@pytest.mark.parametrize("route", TYPED, ids=lambda r: f"{r.method} {r.path}")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_the_typed_decoder_takes_the_checker_takes_alike(route: Any, data: Any) -> None:
    body = data.draw(_near(route.body))
    raw = json.dumps(body).encode()  # lone surrogates as \ud800 escapes, as a client sends
    typed = compile_decoder(route.body)
    assert typed is not None
    try:
        fast = typed(raw)
    except Refused:
        return
    assert _checked(route.body, raw) == fast, raw


def test_plain_bodies_take_the_typed_way() -> None:
    typed = compile_decoder(CLAIM_BODY)
    assert typed is not None
    raw = json.dumps({"limit": 8, "results": [
        {"job_id": 3, "attempt": 1, "run_id": 2, "return_code": 0, "status": "completed",
         "exec_time_s": 0.5, "stdout_path": "o/3.o", "peak_memory_bytes": 10,
         "peak_cpu_percent": 1}], "held_job_ids": [4]}).encode()
    out = typed(raw)
    assert out == _checked(CLAIM_BODY, raw)
    assert out["results"][0]["peak_cpu_percent"] == 1.0 and out["cpus"] is None
    assert "status" not in typed(b'{"results": [{"job_id": 1, "attempt": 1, "run_id": 1,'
                                 b' "return_code": 0}]}')["results"][0]  # no default: absent


@pytest.mark.parametrize("raw, expected", [
    # what msgspec is stricter about, the checker takes
    (b'{"limit": 3.0}', {"limit": 3}),
    (b'{"limit": 2, "later": {"a": 1}}', {"limit": 2}),
    (b'', {"limit": 32}),
    # and what neither takes, the checker words
    (b'{"limit": -1}', "limit: must be >= 0, got -1"),
    (b'{"results": [{"job_id": 1, "attempt": 1, "run_id": 1, "return_code": 0,'
     b' "exec_time_s": 1e400}]}', "results[0].exec_time_s: expected number, got number"),
    (b'{"results": [{"job_id": 1, "attempt": 1, "run_id": 1, "return_code": 0,'
     b' "note": "a\\ud800"}]}',
     "results[0].note: not valid text (a lone surrogate \\ud800 at position 1)"),
    (b'{"results": [{"job_id": "1", "attempt": 1, "run_id": 1, "return_code": 0}]}',
     "results[0].job_id: expected integer, got string"),
    (b'{"limit": 9223372036854775808}', "limit: must be <= 9223372036854775807, got "
                                       "9223372036854775808"),
])
def test_the_reader_answers_as_the_checker(raw: bytes, expected: Any) -> None:
    typed = compile_decoder(CLAIM_BODY)
    assert typed is not None
    with pytest.raises(Refused):
        typed(raw)
    read = body_reader(CLAIM_BODY, 64)
    if isinstance(expected, str):
        with pytest.raises(ApiError) as info:
            read(raw)
        assert info.value.detail == expected
    else:
        body = read(raw)
        assert {k: body[k] for k in expected} == expected


def test_schemas_it_cannot_say_exactly_have_no_typed_decoder() -> None:
    assert compile_decoder({"type": "object"}) is None  # free-form
    assert compile_decoder({"type": "object", "additionalProperties": {"type": "integer"}}) \
        is None
    assert compile_decoder({"type": "object", "properties": {"spec": {"type": "object"}}}) \
        is None
    assert compile_decoder({"type": "object", "properties": {"x": {}}}) is None

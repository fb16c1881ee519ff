"""The compiled schema checks: located messages, defaults, null, bounds (what every route's
body goes through; the paths are written out only for an error)."""

from __future__ import annotations

from typing import Any

import pytest

from torc_net.routes import CLAIM_BODY, RESULT_ITEM
from torc_net.validate import ApiError, compile_schema, where_text

CLAIM = compile_schema(CLAIM_BODY, 8)


def _refused(check: Any, body: Any) -> str:
    with pytest.raises(ApiError) as info:
        check(body, "", 0)
    assert info.value.status == 400
    return str(info.value.detail)


def _result(**fields: Any) -> dict[str, Any]:
    return {"job_id": 7, "attempt": 1, "run_id": 1, "return_code": 0, **fields}


def test_where_text() -> None:
    assert where_text("") == "body"
    assert where_text("spec") == "spec"
    assert where_text((("", "results"), 3)) == "results[3]"
    assert where_text(((("", "results"), 3), "job_id")) == "results[3].job_id"
    assert where_text(("", None)) == "body (key)"
    assert where_text((("", "files"), None)) == "files (key)"
    assert where_text(((("x", 0), 1), 2)) == "x[0][1][2]"


def test_problems_deep_in_a_body_are_located() -> None:
    body = {"limit": 4, "results": [_result(), _result(), _result(job_id="7")]}
    assert _refused(CLAIM, body) == "results[2].job_id: expected integer, got string"
    body = {"results": [_result(), {"job_id": 1, "attempt": 1, "run_id": 1}]}
    assert _refused(CLAIM, body) == "results[1].return_code: required"
    assert _refused(CLAIM, {"results": [_result(attempt=0)]}) == \
        "results[0].attempt: must be >= 1, got 0"
    assert _refused(CLAIM, {"results": [_result(status="done")]}).startswith(
        "results[0].status: expected one of completed")
    assert _refused(CLAIM, {"results": [_result(stdout_path="a\ud800b")]}) == \
        "results[0].stdout_path: not valid text (a lone surrogate \\ud800 at position 1)"
    assert _refused(CLAIM, {"results": [_result(exec_time_s=float("inf"))]}) == \
        "results[0].exec_time_s: expected number, got number"
    assert _refused(CLAIM, []) == "body: expected object, got array"
    assert _refused(CLAIM, {"results": {}}) == "results: expected array, got object"


def test_required_fields_are_reported_in_the_schemas_order() -> None:
    check = compile_schema(RESULT_ITEM)
    assert _refused(check, {"run_id": 1}) == "job_id: required"
    assert _refused(check, {"job_id": 1, "attempt": 1}) == "run_id: required"


def test_defaults_fill_in_and_given_values_win() -> None:
    body = {"limit": 2, "results": [_result(exec_time_s=3, status=None)]}
    out = CLAIM(body, "", 0)
    assert out["limit"] == 2 and out["cpus"] is None and out["held_job_ids"] is None
    item = out["results"][0]
    assert item["exec_time_s"] == 3.0 and type(item["exec_time_s"]) is float
    assert item["status"] is None and item["stdout_tail"] is None
    assert item["recovery_failed"] is False
    assert body["results"][0]["exec_time_s"] == 3  # the caller's value is not changed
    assert CLAIM({}, "", 0)["results"] == []
    whole = _result(status="completed", exec_time_s=1.0)
    assert compile_schema(RESULT_ITEM)(whole, "", 0)["status"] == "completed"


def test_null_only_where_the_schema_allows_it() -> None:
    out = CLAIM({"cpus": None, "results": [_result(peak_memory_bytes=None)]}, "", 0)
    assert out["cpus"] is None and out["results"][0]["peak_memory_bytes"] is None
    assert _refused(CLAIM, {"limit": None}) == "limit: expected integer, got null"
    assert _refused(CLAIM, {"results": [_result(job_id=None)]}) == \
        "results[0].job_id: expected integer, got null"


def test_unknown_fields_are_ignored_but_bounded() -> None:
    out = CLAIM({"results": [_result(extra={"a": [1]})], "other": 1}, "", 0)
    assert out["results"][0]["extra"] == {"a": [1]}
    deep: Any = 1
    for _ in range(10):
        deep = [deep]
    assert _refused(CLAIM, {"results": [_result(extra=deep)]}).startswith(
        "results[0].extra[0]")
    assert "nested deeper than 8 levels" in _refused(CLAIM, {"results": [_result(extra=deep)]})


def test_map_keys_and_values_are_located() -> None:
    check = compile_schema({"type": "object", "additionalProperties": {"type": "integer"},
                            "propertyNames": {"type": "string", "maxLength": 3}})
    assert check({"ab": 1}, "", 0) == {"ab": 1}
    assert _refused(check, {"abcd": 1}) == "body (key): at most 3 characters, got 4"
    assert _refused(check, {"ab": "x"}) == "ab: expected integer, got string"

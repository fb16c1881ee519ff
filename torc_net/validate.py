"""Request validation: the located 400s every route gives for bad input.

Theory of operation
-------------------
A request is checked in full before anything changes (the server's first rule). Errors are
:class:`ApiError` values carrying the HTTP status and a message that names the field by its
path in the body (``results[3].job_id: expected integer, got string``), so a client can fix
exactly what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_PAGE = 100_000

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


# ---------------------------------------------------------------------------------------------
# Hand-written validation with located messages (Rule 4)

_MISSING: Any = object()


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def as_object(value: object, where: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{where}: expected object, got {_type_name(value)}")
    return value


def _field(obj: Mapping[str, Any], key: str, where: str, default: Any,
           nullable: bool) -> tuple[str, Any, bool]:
    """(path, value, done) of a body field: ``done`` when the value is already the answer (the
    default of a missing field, or an allowed null). Missing with no default is a located 400."""
    value = obj.get(key, _MISSING)
    path = f"{where}.{key}" if where else key
    if value is _MISSING:
        if default is _MISSING:
            raise bad_request(f"{path}: required")
        return path, default, True
    if value is None and nullable:
        return path, None, True
    return path, value, False


def get_int(
    obj: Mapping[str, Any],
    key: str,
    where: str,
    *,
    default: Any = _MISSING,
    nullable: bool = False,
    minimum: int | None = None,
) -> Any:
    path, value, done = _field(obj, key, where, default, nullable)
    if done:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        else:
            raise bad_request(f"{path}: expected integer, got {_type_name(value)}")
    if minimum is not None and value < minimum:
        raise bad_request(f"{path}: must be >= {minimum}, got {value}")
    return value


def get_number(
    obj: Mapping[str, Any], key: str, where: str, *, default: Any = _MISSING,
    nullable: bool = False,
) -> Any:
    path, value, done = _field(obj, key, where, default, nullable)
    if done:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"{path}: expected number, got {_type_name(value)}")
    return float(value)


def get_bool(obj: Mapping[str, Any], key: str, where: str, *, default: bool = False) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        path = f"{where}.{key}" if where else key
        raise bad_request(f"{path}: expected boolean, got {_type_name(value)}")
    return value


def get_str(
    obj: Mapping[str, Any], key: str, where: str, *, default: Any = _MISSING,
    nullable: bool = False,
) -> Any:
    path, value, done = _field(obj, key, where, default, nullable)
    if done:
        return value
    if not isinstance(value, str):
        raise bad_request(f"{path}: expected string, got {_type_name(value)}")
    return value


def get_list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key, _MISSING)
    path = f"{where}.{key}" if where else key
    if value is _MISSING:
        raise bad_request(f"{path}: required")
    if not isinstance(value, list):
        raise bad_request(f"{path}: expected array, got {_type_name(value)}")
    return value


def query_int(args: Mapping[str, str], key: str, default: int, *, maximum: int | None = None)\
        -> int:
    raw = args.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter {key}: expected integer, got {raw!r}") from None
    if value < 0:
        raise bad_request(f"query parameter {key}: must be >= 0, got {value}")
    if maximum is not None and value > maximum:
        raise bad_request(f"query parameter {key}: must be <= {maximum}, got {value}")
    return value


def page_args(args: Mapping[str, str], default_limit: int) -> tuple[int, int]:
    return query_int(args, "offset", 0), query_int(args, "limit", default_limit, maximum=MAX_PAGE)

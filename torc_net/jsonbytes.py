"""JSON to and from bytes, the fast way where it is safe: orjson for what it takes alike, the
standard library for the rest — one implementation for the server and its clients.

Why: orjson encodes claim answers 8-12 times and decodes claim bodies 2.5-6.8 times faster
than :mod:`json` (BENCHMARKS.md); a runner's client sends and reads one of each per request.
Where orjson would differ it is not used: it refuses integers beyond 64 bits and dict keys that
are not strings (then :mod:`json` encodes), it has no depth limit when decoding (orjson 3.8
overflows its stack on some 300,000 levels: text with more ``[`` and ``{`` than a bound is
decoded by :mod:`json`, which refuses past about 1,000 levels), and what it refuses to decode
is decoded again by :mod:`json`, whose answer (a value, or its error) is the one given.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Responses and requests are plain trees of dicts and lists: no circular-reference checks.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as compact JSON."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return _ENCODER.encode(obj).encode()


def json_loads(raw: bytes, *, max_openers: int, **json_options: Any) -> Any:
    """``raw`` decoded: by orjson when it holds at most ``max_openers`` ``[`` and ``{`` and
    orjson takes it, else by :mod:`json` (with ``json_options``), whose errors are raised."""
    if raw.count(b"[") + raw.count(b"{") <= max_openers:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw, **json_options)

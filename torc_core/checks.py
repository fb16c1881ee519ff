"""Checks of single values against what the store can hold, shared by the spec parser and the
server's request validation.

Why a module of its own: SQLite holds signed 64-bit integers and UTF-8 text, and a value
outside those (``memory: "99999999999999999999p"``, a JSON ``"\\ud800"`` escape) passed every
earlier check and failed only when stored, as an OverflowError or UnicodeEncodeError in the
middle of a create. Both the parser and the request handlers refuse such values up front, with
the same wording, through these functions. Pure functions: no I/O.
"""

from __future__ import annotations

#: The range of SQLite's INTEGER (and of Rust's i64, which Torc uses).
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_TYPE_NAMES: dict[type, str] = {
    dict: "mapping",
    list: "list",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def type_name(value: object) -> str:
    """The JSON name of a value's type, for messages (``expected a string, got list``)."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def int_text(value: int) -> str:
    """An integer for a message. Past a few hundred digits its size is said instead: Python
    refuses to print integers of more than 4300 digits, and nobody reads them."""
    if value.bit_length() <= 1000:
        return str(value)
    return f"a {value.bit_length()}-bit integer"


def shown(text: str, limit: int = 40) -> str:
    """A string for a message: its ``repr``, cut after ``limit`` characters (a 1 MB value
    makes a 1 MB message otherwise)."""
    return repr(text) if len(text) <= limit else repr(text[:limit] + "...")


def check_int64(value: int, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> str | None:
    """None if ``minimum <= value <= maximum`` (bounds within the signed 64-bit range), else
    the problem, worded as the parser's other messages: ``must be at least 0, got -1``."""
    if value < minimum:
        return f"must be at least {minimum}, got {int_text(value)}"
    if value > maximum:
        return f"must be at most {maximum}, got {int_text(value)}"
    return None


def is_valid_text(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8: it holds no lone surrogate (U+D800..U+DFFF,
    which JSON's ``\\ud800`` escape and YAML's ``"\\ud800"`` can produce).

    ``isascii`` answers in constant time for most strings; only others are encoded."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(text: str) -> str | None:
    """None for valid text, else the problem and where it is:
    ``not valid text (a lone surrogate \\ud800 at position 5)``."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ord(text[exc.start])
        return f"not valid text (a lone surrogate \\u{char:04x} at position {exc.start})"
    return None

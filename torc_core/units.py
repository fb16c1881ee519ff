"""Torc's memory sizes (``"2g"``) and durations (ISO 8601, ``"P0DT1H"``) as exact integers,
refused, located, when the store could not hold them.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from .checks import INT64_MAX, int_text, shown

_MEMORY = re.compile(r"(?i)\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(?:i?b)?\s*")
_MEMORY_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(
    rf"P(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?", re.IGNORECASE
)




#: Memory and runtime strings are refused past this length: no real one comes near, and
#: a number of thousands of digits costs quadratic time to read (and fails past 4300).
MAX_SCALAR_TEXT = 64


def _exact(number: str) -> Fraction:
    """A decimal as written ("1.5", "5.", ".25"), exactly: no float on the way, so 8191.99p
    stays below 2**63 and 1e30 seconds do not turn into inf."""
    whole, _, frac = number.partition(".")
    scale = 10 ** len(frac)
    return Fraction(int(whole or "0") * scale + int(frac or "0"), scale)


_LARGEST = {"memory": f"8 EiB ({INT64_MAX} bytes)", "runtime": f"{INT64_MAX} seconds"}


def _plain_int(value: int, what: str) -> int:
    if value < 0:
        raise ValueError(f"bad {what} {int_text(value)}: negative")
    if value > INT64_MAX:
        raise ValueError(f"bad {what} {int_text(value)}: more than {_LARGEST[what]}")
    return value


def parse_memory(value: object) -> int:
    """Bytes from Torc's memory strings ("512m", "4g", "1.5g", "512M", "100k") or plain ints;
    at most INT64_MAX (what SQLite holds)."""
    if isinstance(value, bool):
        raise ValueError(f"bad memory {value!r}")
    if isinstance(value, int):
        return _plain_int(value, "memory")
    if not isinstance(value, str):
        raise ValueError(f"bad memory {value!r}: expected a string like '4g'")
    if len(value) > MAX_SCALAR_TEXT:
        raise ValueError(f"bad memory {shown(value)}: too long ({len(value)} characters)")
    m = _MEMORY.fullmatch(value)
    if not m:
        raise ValueError(f"bad memory {value!r}: expected a number with k, m, g or t")
    amount = int(_exact(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()])
    if amount > INT64_MAX:
        raise ValueError(f"bad memory {value!r}: more than {_LARGEST['memory']}")
    return amount


def parse_duration(value: object) -> int:
    """Seconds (rounded up) from an ISO 8601 duration ("PT30M", "P0DT1M", "PT1.5H", "P1DT2H");
    a plain int is taken as seconds. At most INT64_MAX (what SQLite holds)."""
    if isinstance(value, bool):
        raise ValueError(f"bad runtime {value!r}")
    if isinstance(value, int):
        return _plain_int(value, "runtime")
    if not isinstance(value, str):
        raise ValueError(f"bad runtime {value!r}: expected an ISO 8601 duration like 'PT30M'")
    if len(value) > MAX_SCALAR_TEXT:
        raise ValueError(f"bad runtime {shown(value)}: too long ({len(value)} characters)")
    text = value.strip()
    m = _DURATION.fullmatch(text)
    if not m or not any(m.groups()) or text.upper().endswith("T"):
        raise ValueError(f"bad runtime {value!r}: expected an ISO 8601 duration like 'PT30M'")
    weeks, days, hours, minutes, seconds = (_exact(g) if g else Fraction(0) for g in m.groups())
    total = math.ceil((((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds)
    if total > INT64_MAX:
        raise ValueError(f"bad runtime {value!r}: more than {_LARGEST['runtime']}")
    return total

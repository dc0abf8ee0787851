"""JSON from clients, read within limits: nesting depth and number size are checked before any
recursive parser sees the text, so hostile input gets an error instead of a RecursionError.

Used for request bodies, cursors and WebSocket frames. The limits are module constants (no
setting): no legitimate tapescan document nests deeper than 4 levels or needs a number beyond
float range.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # a scan definition nests 4 deep; recursion problems start near 1,000
MAX_NUMBER_DIGITS = 300  # larger integers do not fit a float (~1.8e308)

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


class BadJsonError(ValueError):
    """Not one JSON document within the limits; the message says what is wrong."""


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (strings skipped). Malformed text
    may be over-counted, never under-counted, so a depth check is safe before parsing."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise BadJsonError(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJsonError(f"the number {text[:40]} is out of range")
    return value


def _constant(text: str) -> Any:
    raise BadJsonError(f"{text} is not JSON")


def check_depth(raw: bytes) -> None:
    if nesting_depth(raw) > MAX_DEPTH:
        raise BadJsonError(f"JSON nested deeper than {MAX_DEPTH} levels")


def loads(raw: bytes | str) -> Any:
    """One JSON document, or BadJsonError (also for bad UTF-8 and out-of-range numbers)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    check_depth(data)
    try:
        return json.loads(data, parse_int=_integer, parse_float=_real, parse_constant=_constant)
    except BadJsonError:
        raise
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError
        raise BadJsonError(f"not valid JSON: {error}") from None

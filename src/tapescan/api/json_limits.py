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

# The bytes that matter for nesting: brackets, quotes and backslashes (escapes in strings).
_SPECIAL = re.compile(rb'[\[\]{}"\\]')
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


class BadJsonError(ValueError):
    """Not one JSON document within the limits; the message says what is wrong."""


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw``, with strings skipped as the JSON
    parser reads them (an unclosed string runs to the end, and the parser rejects it before
    it nests anything), so a depth check is safe before parsing."""
    depth = deepest = 0
    in_string = False
    escaped = -1  # the position of the byte a backslash escapes
    # One pass over the special bytes only, each looked at once: linear in the worst case (a
    # regular expression for strings went quadratic on an unclosed string of escaped quotes).
    for match in _SPECIAL.finditer(raw):
        at = match.start()
        if at == escaped:
            continue
        byte = raw[at]
        if in_string:
            if byte == _BACKSLASH:
                escaped = at + 1
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif byte in _CLOSE:
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

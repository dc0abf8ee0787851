"""The nesting check that runs before any JSON parser sees client text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapescan.api.json_limits import MAX_DEPTH, BadJsonError, loads, nesting_depth

TRICKY_TEXT = st.text(alphabet='[]{}"\\ ab\n', max_size=12)
DOCUMENTS = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS)
def test_depth_of_any_document_whatever_its_strings_hold(document: Any) -> None:
    """Brackets, quotes and backslashes inside strings never count."""
    assert nesting_depth(json.dumps(document).encode()) == depth(document)


def test_an_unclosed_string_of_escaped_quotes_is_scanned_once() -> None:
    """The pattern a regular expression took quadratic time on (64 KiB: 12.8 s, now ~11 ms)."""
    hostile = b"[" * 3 + b'"' + b'\\"' * 32_768
    assert nesting_depth(hostile) == 3
    with pytest.raises(BadJsonError):
        loads(hostile)


def test_too_deep_is_refused_before_parsing() -> None:
    with pytest.raises(BadJsonError, match="deeper than"):
        loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None

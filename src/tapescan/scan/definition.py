"""Scan definitions as data, validated with field-level errors (no eval, no SQL).

A scan is ``id``, ``title``, ``filters`` (``{field, op, value}`` combined with AND), optional
``sessions``, ``sort`` (``{field, direction}``), ``limit`` (at most 200) and ``columns``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tapescan.indicators.catalog import BY_NAME, Kind

Op = Literal[">", ">=", "<", "<=", "==", "!=", "between", "in"]
OPS: tuple[str, ...] = (">", ">=", "<", "<=", "==", "!=", "between", "in")
SESSIONS: tuple[str, ...] = ("pre", "regular", "post")
MAX_LIMIT = 200
ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
FilterValue = float | bool | str | tuple[float, float] | tuple[float | str, ...]


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str
    value: FilterValue


@dataclass(frozen=True, slots=True)
class Sort:
    field: str
    direction: Literal["asc", "desc"] = "desc"


@dataclass(frozen=True, slots=True)
class ScanDefinition:
    id: str
    title: str
    filters: tuple[Filter, ...]
    sort: Sort
    limit: int
    columns: tuple[str, ...]
    sessions: tuple[str, ...] = SESSIONS
    description: str = ""
    builtin: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "filters": [
                {
                    "field": f.field,
                    "op": f.op,
                    "value": list(f.value) if isinstance(f.value, tuple) else f.value,
                }
                for f in self.filters
            ],
            "sessions": list(self.sessions),
            "sort": {"field": self.sort.field, "direction": self.sort.direction},
            "limit": self.limit,
            "columns": list(self.columns),
            "builtin": self.builtin,
        }


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str
    message: str


@dataclass(slots=True)
class ScanValidationError(ValueError):
    errors: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{e.path}: {e.message}" for e in self.errors)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def column(self, path: str, name: object, numeric_only: bool = False) -> str | None:
        if not isinstance(name, str):
            self.fail(path, "must be a column name (text)")
            return None
        column = BY_NAME.get(name)
        if column is None:
            self.fail(
                path,
                f"unknown field '{name}'; `tapescan scans --columns` lists the fields",
            )
            return None
        if numeric_only and column.kind is Kind.TEXT:
            self.fail(path, f"'{name}' is text and cannot be sorted on")
            return None
        return name

    def filter_value(self, path: str, kind: Kind, op: str, value: object) -> FilterValue | None:
        if op == "between":
            if (
                isinstance(value, Sequence)
                and not isinstance(value, str)
                and len(value) == 2
                and all(_is_number(v) for v in value)
                and value[0] <= value[1]
            ):
                return (float(value[0]), float(value[1]))
            self.fail(path, "'between' needs [low, high], two numbers with low <= high")
            return None
        if op == "in":
            if not isinstance(value, Sequence) or isinstance(value, str) or not value:
                self.fail(path, "'in' needs a non-empty list")
                return None
            wanted = str if kind is Kind.TEXT else float
            if len(value) > 1_000 or not all(
                isinstance(v, str) if wanted is str else _is_number(v) for v in value
            ):
                items = "texts" if wanted is str else "numbers"
                self.fail(path, f"'in' on this field needs a list of up to 1,000 {items}")
                return None
            return tuple(v if isinstance(v, str) else float(v) for v in value)
        if kind is Kind.TEXT:
            if op not in ("==", "!=") or not isinstance(value, str):
                self.fail(path, "a text field takes ==, != or in, with text")
                return None
            return value
        if kind is Kind.FLAG:
            if op not in ("==", "!=") or not isinstance(value, bool):
                self.fail(path, "a true/false field takes == or != with true or false")
                return None
            return value
        if not _is_number(value):
            self.fail(path, f"needs a number, got {value!r}")
            return None
        return float(value)  # type: ignore[arg-type]


def parse_scan(data: Mapping[str, Any], builtin: bool = False) -> ScanDefinition:
    """A validated ScanDefinition, or ScanValidationError listing every problem by path."""
    check = _Checker()
    known = {
        "id",
        "title",
        "description",
        "filters",
        "sessions",
        "sort",
        "limit",
        "columns",
        "builtin",
    }
    for key in sorted(set(data) - known):
        check.fail(key, "unknown key")

    scan_id = data.get("id")
    if not isinstance(scan_id, str) or not ID_PATTERN.match(scan_id):
        check.fail("id", "must be 1-48 lower-case letters, digits or _, starting with a letter")
    title = data.get("title", scan_id)
    if not isinstance(title, str) or not 0 < len(title) <= 80:
        check.fail("title", "must be text of 1-80 characters")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        check.fail("description", "must be text of at most 500 characters")

    filters: list[Filter] = []
    raw_filters = data.get("filters", [])
    if (
        not isinstance(raw_filters, Sequence)
        or isinstance(raw_filters, str)
        or len(raw_filters) > 32
    ):
        check.fail("filters", "must be a list of at most 32 filters")
        raw_filters = []
    for i, raw in enumerate(raw_filters):
        path = f"filters[{i}]"
        if not isinstance(raw, Mapping):
            check.fail(path, "must be an object with field, op and value")
            continue
        for key in sorted(set(raw) - {"field", "op", "value"}):
            check.fail(f"{path}.{key}", "unknown key")
        name = check.column(f"{path}.field", raw.get("field"))
        op = raw.get("op")
        if op not in OPS:
            check.fail(f"{path}.op", f"unknown op {op!r}; use one of {', '.join(OPS)}")
            continue
        if "value" not in raw:
            check.fail(f"{path}.value", "is required")
            continue
        if name is not None:
            value = check.filter_value(f"{path}.value", BY_NAME[name].kind, str(op), raw["value"])
            if value is not None:
                filters.append(Filter(name, str(op), value))

    sessions = data.get("sessions", list(SESSIONS))
    if (
        not isinstance(sessions, Sequence)
        or isinstance(sessions, str)
        or not sessions
        or any(s not in SESSIONS for s in sessions)
    ):
        check.fail("sessions", f"must be a non-empty list of {', '.join(SESSIONS)}")
        sessions = list(SESSIONS)

    sort_data = data.get("sort")
    sort = Sort("volume")
    if not isinstance(sort_data, Mapping):
        check.fail("sort", "must be an object with field and direction")
    else:
        sort_field = check.column("sort.field", sort_data.get("field"), numeric_only=True)
        direction = sort_data.get("direction", "desc")
        if direction not in ("asc", "desc"):
            check.fail("sort.direction", "must be 'asc' or 'desc'")
        elif sort_field is not None:
            sort = Sort(sort_field, direction)

    limit = data.get("limit", 50)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        check.fail("limit", f"must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
        limit = 1

    raw_columns = data.get("columns", ["symbol", "price", "change_pct", "volume"])
    columns: list[str] = []
    if (
        not isinstance(raw_columns, Sequence)
        or isinstance(raw_columns, str)
        or not 0 < len(raw_columns) <= 40
    ):
        check.fail("columns", "must be a list of 1-40 column names")
        raw_columns = []
    for i, raw in enumerate(raw_columns):
        name = check.column(f"columns[{i}]", raw)
        if name is not None and name not in columns:
            columns.append(name)
    if "symbol" in columns:
        columns.remove("symbol")
    columns.insert(0, "symbol")

    if check.errors:
        raise ScanValidationError(check.errors)
    return ScanDefinition(
        id=str(scan_id),
        title=str(title),
        filters=tuple(filters),
        sort=sort,
        limit=limit,
        columns=tuple(columns),
        sessions=tuple(s for s in SESSIONS if s in sessions),
        description=str(description),
        builtin=builtin,
    )

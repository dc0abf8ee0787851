"""The built-in scans and user scans from a TOML file, validated on load."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from tapescan.scan.definition import FieldError, ScanDefinition, ScanValidationError, parse_scan

MAX_SCANS = 256


def builtin_scans() -> list[ScanDefinition]:
    text = resources.files("tapescan.scan").joinpath("builtin_scans.toml").read_text("utf-8")
    return [parse_scan(raw, builtin=True) for raw in tomllib.loads(text)["scan"]]


def load_user_scans(path: Path) -> list[ScanDefinition]:
    """Scans from ``[[scan]]`` tables in ``path``; errors name the file, the scan and the field.

    The file holds ``[[scan]]`` tables and nothing else: another top-level key, ``scan`` that is
    not an array of tables, or an id used twice is refused rather than quietly ignored or
    overwritten.
    """
    data = _read_toml(path)
    raws = data.pop("scan", [])
    errors = [
        FieldError(f"{path}: {key}", "unknown top-level key; the file holds [[scan]] tables only")
        for key in sorted(data)
    ]
    if not isinstance(raws, list) or not all(isinstance(raw, dict) for raw in raws):
        errors.append(
            FieldError(f"{path}: scan", "must be an array of tables, written [[scan]] (one each)")
        )
        raise ScanValidationError(errors)
    scans: list[ScanDefinition] = []
    first_table: dict[str, int] = {}
    for number, raw in enumerate(raws, start=1):
        label = raw.get("id", number - 1)
        scan_id = raw.get("id")
        if isinstance(scan_id, str):
            if scan_id in first_table:
                errors.append(
                    FieldError(
                        f"{path}: scan[{scan_id}].id",
                        f"'{scan_id}' is used by [[scan]] tables {first_table[scan_id]} and "
                        f"{number}; each id once per file",
                    )
                )
                continue
            first_table[scan_id] = number
        try:
            scans.append(parse_scan(raw))
        except ScanValidationError as error:
            errors.extend(
                FieldError(f"{path}: scan[{label}].{e.path}", e.message) for e in error.errors
            )
    if errors:
        raise ScanValidationError(errors)
    return scans


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in ``path``, or ScanValidationError naming the file and the cause."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ScanValidationError([FieldError(str(path), error.strerror or str(error))]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ScanValidationError(
            [
                FieldError(
                    str(path), f"not UTF-8 text (byte 0x{raw[error.start]:02x} on line {line})"
                )
            ]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScanValidationError([FieldError(str(path), str(error))]) from None


def merge(*groups: Iterable[ScanDefinition]) -> list[ScanDefinition]:
    """Later groups replace scans of the same id; order of first appearance is kept."""
    merged: dict[str, ScanDefinition] = {}
    for group in groups:
        for scan in group:
            merged[scan.id] = scan
    if len(merged) > MAX_SCANS:
        raise ScanValidationError(
            [FieldError("scans", f"at most {MAX_SCANS} scans, got {len(merged)}")]
        )
    return list(merged.values())

"""The built-in scans and user scans from a TOML file, validated on load."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from tapescan.scan.definition import FieldError, ScanDefinition, ScanValidationError, parse_scan

MAX_SCANS = 256


def builtin_scans() -> list[ScanDefinition]:
    text = resources.files("tapescan.scan").joinpath("builtin_scans.toml").read_text("utf-8")
    return [parse_scan(raw, builtin=True) for raw in tomllib.loads(text)["scan"]]


def load_user_scans(path: Path) -> list[ScanDefinition]:
    """Scans from ``[[scan]]`` tables in ``path``; errors name the scan and the field."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ScanValidationError([FieldError(str(path), str(error))]) from None
    raws = data.get("scan", [])
    errors: list[FieldError] = []
    scans: list[ScanDefinition] = []
    for i, raw in enumerate(raws if isinstance(raws, list) else []):
        try:
            scans.append(parse_scan(raw))
        except ScanValidationError as error:
            label = raw.get("id", i) if isinstance(raw, dict) else i
            errors.extend(
                FieldError(f"{path}: scan[{label}].{e.path}", e.message) for e in error.errors
            )
    if errors:
        raise ScanValidationError(errors)
    return scans


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

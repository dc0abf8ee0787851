"""The scans a process runs: built-ins, a user scans file, and scans made through the API.

Scans made through the API are kept in ``user_scans.json`` in the data directory, so they survive
a restart. At most MAX_SCANS scans in all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tapescan.scan.definition import FieldError, ScanDefinition, ScanValidationError, parse_scan
from tapescan.scan.library import MAX_SCANS, builtin_scans, load_user_scans, merge

OnChange = Callable[[Sequence[ScanDefinition], list[str], list[str]], None]


class ScanConflictError(Exception):
    """The request contradicts what exists (id taken, built-in scan deleted...)."""


class ScanRegistry:
    def __init__(self, scans_file: Path | None, store_file: Path | None) -> None:
        self._store_file = store_file
        self._base = merge(builtin_scans(), load_user_scans(scans_file) if scans_file else [])
        self._api: dict[str, ScanDefinition] = {}
        if store_file is not None and store_file.is_file():
            self._api = {scan.id: scan for scan in _load_api_scans(store_file)}
        self._listeners: list[OnChange] = []

    def on_change(self, listener: OnChange) -> None:
        self._listeners.append(listener)

    def definitions(self) -> list[ScanDefinition]:
        return merge(self._base, self._api.values())

    def get(self, scan_id: str) -> ScanDefinition | None:
        return next((s for s in self.definitions() if s.id == scan_id), None)

    def create(self, data: Mapping[str, Any]) -> ScanDefinition:
        scan = parse_scan(data)
        if self.get(scan.id) is not None:
            raise ScanConflictError(
                f"scan '{scan.id}' exists; PUT /api/v1/scans/{scan.id} replaces it"
            )
        if len(self.definitions()) >= MAX_SCANS:
            raise ScanValidationError([FieldError("id", f"at most {MAX_SCANS} scans")])
        self._api[scan.id] = scan
        self._changed([scan.id], [])
        return scan

    def replace(self, scan_id: str, data: Mapping[str, Any]) -> ScanDefinition:
        if self.get(scan_id) is None:
            raise KeyError(scan_id)
        body = dict(data)
        if body.setdefault("id", scan_id) != scan_id:
            raise ScanValidationError(
                [FieldError("id", f"must be '{scan_id}', the id in the path")]
            )
        scan = parse_scan(body)
        self._api[scan_id] = scan
        self._changed([scan_id], [])
        return scan

    def delete(self, scan_id: str) -> None:
        if scan_id not in self._api:
            if self.get(scan_id) is None:
                raise KeyError(scan_id)
            raise ScanConflictError(
                f"'{scan_id}' is not a scan made through the API and cannot be deleted"
            )
        del self._api[scan_id]
        still = self.get(scan_id)  # an API scan may have shadowed a built-in of the same id
        self._changed([scan_id] if still else [], [] if still else [scan_id])

    def _changed(self, changed: list[str], deleted: list[str]) -> None:
        if self._store_file is not None:
            self._store_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._store_file.with_suffix(".tmp")
            temporary.write_text(json.dumps([s.to_dict() for s in self._api.values()], indent=1))
            temporary.replace(self._store_file)
        definitions = self.definitions()
        for listener in self._listeners:
            listener(definitions, changed, deleted)


def _load_api_scans(path: Path) -> list[ScanDefinition]:
    """The scans saved by ``_changed``; a damaged file stops the start and is left untouched."""
    try:
        raws = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:  # ValueError: bad JSON or not UTF-8
        raise ScanValidationError(
            [FieldError(str(path), f"cannot be read ({error}); fix or move the file")]
        ) from None
    if not isinstance(raws, list) or not all(isinstance(raw, dict) for raw in raws):
        raise ScanValidationError(
            [FieldError(str(path), "must be a JSON list of scans; fix or move the file")]
        )
    scans: list[ScanDefinition] = []
    errors: list[FieldError] = []
    for i, raw in enumerate(raws):
        try:
            scans.append(parse_scan(raw))
        except ScanValidationError as error:
            label = raw.get("id", i)
            errors.extend(
                FieldError(f"{path}: scan[{label}].{e.path}", e.message) for e in error.errors
            )
    if errors:
        raise ScanValidationError(errors)
    return scans

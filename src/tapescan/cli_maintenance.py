"""``tapescan maintenance``: run the scheduled jobs now (retention and archive)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tapescan.config import ConfigError, Settings, load_settings

maintenance_app = typer.Typer(
    name="maintenance",
    help="Run maintenance jobs now: retention of old sessions to the Parquet archive.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True, soft_wrap=True)
_out = Console(soft_wrap=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit; never a traceback."""
    _err.print(f"tapescan: {' '.join(message.split())}", markup=False, highlight=False)
    raise typer.Exit(code)


def _megabytes(value: int) -> str:
    return f"{value / 1e6:,.2f} MB"


@maintenance_app.command("run")
def run_maintenance(
    store: Annotated[
        str | None, typer.Option("--store", help="duckdb | postgres [default: duckdb].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory [default: ./tapescan-data].")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (default: ./tapescan.toml).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Retire sessions beyond each table's retention to the archive, now.

    Exit codes: 0 done, 1 some sessions could not be archived (they stay hot), 2 bad settings
    or the store cannot be opened.
    """
    from tapescan.store.archive import Archive  # noqa: PLC0415 - keeps `--help` fast
    from tapescan.store.base import StoreError  # noqa: PLC0415
    from tapescan.store.open import open_store  # noqa: PLC0415
    from tapescan.store.retention import RetentionStep, retire  # noqa: PLC0415

    try:
        settings = load_settings({"store": store, "data_dir": data_dir}, config)
    except ConfigError as error:
        _fail(str(error))
    try:
        opened = open_store(settings)
    except StoreError as error:
        _fail(str(error))
    archive = Archive(settings.archive_path, settings.archive_zstd_level)
    try:
        with Progress(
            TextColumn("[bold]retention[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sessions"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=_err,
        ) as progress:
            task = progress.add_task("planning", total=None)

            def on_step(step: RetentionStep) -> None:
                where = f"{step.table} {step.session}" if step.session else "starting"
                progress.update(task, total=step.total, completed=step.done, description=where)

            report = retire(opened, archive, settings, on_step)
    except (StoreError, OSError) as error:
        _fail(str(error))
    finally:
        archive.close()
        opened.close()
    summary = report.to_dict()
    summary["store"] = settings.store
    summary["archive_dir"] = str(settings.archive_path)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        _print_summary(summary, settings)
    for failure in report.failures:
        _err.print(
            f"tapescan: {failure.table} {failure.session} stays hot: "
            f"{' '.join(failure.message.split())}",
            markup=False,
            highlight=False,
        )
    if not report.ok:
        raise typer.Exit(1)


def _print_summary(summary: dict[str, Any], settings: Settings) -> None:
    table = Table(title=f"retention ({settings.store}, archive {settings.archive_path})")
    for heading in ("table", "keep", "hot", "retired", "sessions", "rows"):
        table.add_column(heading, justify="left" if heading in {"table", "sessions"} else "right")
    for entry in summary["tables"]:
        dropped = entry["dropped"]
        span = "..".join(sorted({dropped[0], dropped[-1]})) if dropped else ""
        table.add_row(
            entry["table"],
            str(entry["keep"]),
            str(len(entry["kept"])),
            str(len(dropped)),
            span,
            f"{entry['rows']:,}",
        )
    _out.print(table)
    before = summary["hot_bytes_before"].get("total", 0)
    after = summary["hot_bytes_after"].get("total", 0)
    _out.print(
        f"hot store: {_megabytes(before)} before, {_megabytes(after)} after; "
        f"archive: {_megabytes(summary['archive_bytes'].get('total', 0))}",
        highlight=False,
    )

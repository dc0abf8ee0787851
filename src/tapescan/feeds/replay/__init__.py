"""feeds/replay: the user's own minute bars, daily bars and reference data as a feed."""

from tapescan.feeds.replay.feed import ReplayFeed
from tapescan.feeds.replay.files import FileKind, ReadLimits, ReplayFileError, ReplayFiles
from tapescan.feeds.replay.validate import (
    FileSummary,
    ReplaySummary,
    validate_file,
    validate_files,
)

__all__ = [
    "FileKind",
    "FileSummary",
    "ReadLimits",
    "ReplayFeed",
    "ReplayFileError",
    "ReplayFiles",
    "ReplaySummary",
    "validate_file",
    "validate_files",
]

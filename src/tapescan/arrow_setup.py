"""pyarrow without pandas in tapescan's own processes.

pyarrow looks for pandas the first time it converts anything (``pa.array``, ``pa.table``) and
imports it when installed: ~55 MB resident in a process whose whole budget is 300 MB, for a
library tapescan never calls. ``keep_pandas_out`` makes that first look fail, so pyarrow
remembers pandas as absent; pandas itself stays importable for whoever asks for it directly.
Only the CLI calls this (a library user's pyarrow keeps its pandas support).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

import pyarrow as pa


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError("pandas is kept out of pyarrow in this process")
        return None


def keep_pandas_out() -> None:
    """Let pyarrow find no pandas (once per process, before its first conversion)."""
    if "pandas" in sys.modules:
        return  # too late: pyarrow may already use it
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow's one look for pandas
    finally:
        sys.meta_path.remove(finder)

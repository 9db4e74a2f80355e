"""CSV that spreadsheets open as data, never as formulas ("CSV injection").

Cells come from agents (column names, values, host names): a cell starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets
(``=HYPERLINK(...)`` can leak data or lure a click). Such cells get a leading ``'``, which the
spreadsheet shows as text; plain numbers such as ``-5`` and ``+1.5`` are kept as they are.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value: Any) -> Any:
    """``value`` made inert for spreadsheets (non-strings are returned unchanged)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose every cell goes through ``safe_cell``."""

    def __init__(self, fileobj: Any, **options: Any) -> None:
        self._writer = csv.writer(fileobj, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(cell) for cell in row])

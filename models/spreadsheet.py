"""The rule for text that leaves Threadline in a CSV file: no cell may run as a spreadsheet formula.

Mail subjects, names and notes come from outside. A cell such as `=HYPERLINK(...)` or `@SUM(...)` written
verbatim is run by Excel, LibreOffice and Google Sheets when the file is opened (CSV injection, OWASP). Every
CSV the product writes (the CLI's exports and the panel's) passes its cells through `spreadsheet_safe`, which
prefixes a cell starting with one of the trigger characters with a single quote so it is shown as text.
JSONL and other machine formats stay byte-exact and never go through here.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, TextIO

# The characters OWASP lists as formula triggers: = + - @, and tab / carriage return, which some programs
# strip before looking at the first character.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# A plain signed number ("-12.50") is data a spreadsheet reads as a number, never a formula: left alone.
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def spreadsheet_safe(text: str) -> str:
    """`text` as a cell a spreadsheet shows as text, never runs."""
    if text.startswith(FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class SafeCsvWriter:
    """A csv.writer whose every cell goes through `spreadsheet_safe` (None is written as an empty cell)."""

    def __init__(self, stream: TextIO, *, lineterminator: str = "\n") -> None:
        self._writer = csv.writer(stream, lineterminator=lineterminator)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([spreadsheet_safe("" if cell is None else str(cell)) for cell in row])

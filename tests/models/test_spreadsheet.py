import csv
import io

import pytest

from models.errors import DomainError
from models.money import normalize_currency
from models.spreadsheet import SafeCsvWriter, spreadsheet_safe


@pytest.mark.parametrize(
    "cell",
    ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"],
)
def test_cells_a_spreadsheet_would_run_are_shown_as_text(cell):
    assert spreadsheet_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Acme", "", "1234.50", "-12.50", "+42", "jane@acme.com", "a=b"])
def test_ordinary_cells_are_left_alone(cell):
    assert spreadsheet_safe(cell) == cell


def test_the_writer_neutralizes_every_cell_and_reads_back():
    out = io.StringIO()
    writer = SafeCsvWriter(out)
    writer.writerow(["subject", None, 3])
    writer.writerow(["=1+1", "ok", "@x"])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [["subject", "", "3"], ["'=1+1", "ok", "'@x"]]


@pytest.mark.parametrize(("typed", "code"), [("eur", "EUR"), (" usd ", "USD"), ("", "USD"), (None, "USD")])
def test_currency_codes_are_normalized(typed, code):
    assert normalize_currency(typed) == code


@pytest.mark.parametrize("typed", ["dollars", "DOL", "EU", "XXX", "€"])
def test_unknown_currencies_are_refused_with_what_was_typed(typed):
    with pytest.raises(DomainError, match="not a currency"):
        normalize_currency(typed)

"""Money rules: which currencies exist and how a currency code is written.

The one owner of the currency rule. The list of currencies is ISO 4217 as Babel ships it from the Unicode
CLDR (a maintained list, updated with each Babel release), so "DOL" or "dollars" is refused instead of being
cut to three letters. The deal operations, the importer and the panel all call `normalize_currency`.
"""

from __future__ import annotations

from functools import lru_cache

from babel.numbers import list_currencies

from models.errors import DomainError

DEFAULT_CURRENCY = "USD"


@lru_cache(maxsize=1)
def known_currencies() -> frozenset[str]:
    """Every ISO 4217 code Babel knows, minus the codes that mean "no currency" or "test"."""
    return frozenset(list_currencies()) - {"XXX", "XTS"}


def is_currency(code: str) -> bool:
    return code in known_currencies()


def normalize_currency(value: str | None, *, default: str = DEFAULT_CURRENCY) -> str:
    """The ISO 4217 code for `value` (case and spaces ignored); empty means `default`.

    Raises DomainError with a message for the person who typed it when the code is not a currency.
    """
    code = (value or "").strip().upper() or default
    if not is_currency(code):
        raise DomainError(
            f"{(value or '').strip()!r} is not a currency: use an ISO 4217 code like EUR or USD"
        )
    return code

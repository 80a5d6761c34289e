"""How the panel writes times and money for people, and reads the times they type.

Times are stored in UTC and shown in the team's time zone (`[team] timezone`); a time typed in a form is the
team's local time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from admin.context import team_tz
from models.errors import DomainError
from models.reports import MoneyByCurrency


def local_naive_to_utc(value: datetime | None) -> datetime | None:
    """A date-time typed in a form is the team's local time; the database keeps UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=team_tz())
    return value.astimezone(UTC)


def parse_local_datetime(value: str | None) -> datetime | None:
    """A `datetime-local` input ('2026-11-23T09:30') in the team's time zone, as UTC."""
    if not value or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise DomainError(f"{value!r} is not a date and time (use YYYY-MM-DD HH:MM)") from None
    return local_naive_to_utc(parsed)


def fmt_datetime(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(team_tz()).strftime("%Y-%m-%d %H:%M")


def fmt_money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def money_text(amounts: MoneyByCurrency) -> str:
    """Amounts in several currencies, kept apart: "1,200.00 EUR + 40.00 USD"."""
    if not amounts:
        return "0"
    return " + ".join(f"{value:,.2f} {currency}" for currency, value in amounts.items())


def split_list(text: str | None) -> list[str]:
    """A comma (or semicolon) separated form field as its items."""
    return [item.strip() for item in (text or "").replace(";", ",").split(",") if item.strip()]

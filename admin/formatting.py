"""How the panel writes times and money for people, and reads the times they type.

Times are stored in UTC and shown in the team's time zone (`[team] timezone`); a time typed in a form is the
team's local time. Money and relative times are written by Babel in the team's locale (`[team] locale`):
"$12,500" in en_US, "12.500 €" in de_DE. Boards and totals show whole amounts (no cents); several currencies
stay apart ("€12,000 + $40,000"), never summed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import TypeVar

from babel import Locale
from babel.dates import format_timedelta
from babel.numbers import format_currency, format_decimal

from admin.context import now, settings, team_tz
from models.errors import DomainError
from models.reports import MoneyByCurrency

T = TypeVar("T")


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


def parse_local_date(value: str | None) -> date | None:
    """A `date` input ('2026-11-23'), or None when empty."""
    return _parsed(value, date.fromisoformat, "a date (use YYYY-MM-DD)")


def parse_local_time(value: str | None) -> time | None:
    """A `time` input ('09:30'), or None when empty (the activity is due any time that day)."""
    return _parsed(value, time.fromisoformat, "a time (use HH:MM)")


def _parsed(value: str | None, parse: Callable[[str], T], what: str) -> T | None:
    if not value or not value.strip():
        return None
    try:
        return parse(value.strip())
    except ValueError:
        raise DomainError(f"{value!r} is not {what}") from None


def fmt_datetime(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(team_tz()).strftime("%Y-%m-%d %H:%M")


def fmt_money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def locale() -> str:
    return settings().team.locale


@lru_cache(maxsize=32)
def _whole_pattern(locale_name: str) -> str:
    """The locale's currency pattern without the fraction digits ("¤#,##0.00" -> "¤#,##0")."""
    pattern = Locale.parse(locale_name).currency_formats["standard"].pattern
    return re.sub(r"0\.0+", "0", pattern)


def money(value: Decimal | int, currency: str, *, cents: bool = True) -> str:
    """One amount in the team's locale: "$12,500.00", or "$12,500" with `cents=False` (rounded)."""
    name = locale()
    if cents:
        return format_currency(value, currency, locale=name)
    return format_currency(value, currency, _whole_pattern(name), locale=name, currency_digits=False)


def money_text(amounts: MoneyByCurrency, *, cents: bool = False) -> str:
    """Amounts in several currencies, kept apart: "€1,200 + $40"; whole amounts unless `cents`."""
    if not amounts:
        return format_decimal(0, locale=locale())
    return " + ".join(money(value, currency, cents=cents) for currency, value in amounts.items())


def number(value: int | float | Decimal) -> str:
    return format_decimal(value, locale=locale())


def relative(value: datetime | None, *, reference: datetime | None = None) -> str:
    """A moment as people say it: "3 days ago", "in 2 hours" (Babel, team locale)."""
    if value is None:
        return ""
    delta = value - (reference or now())
    if abs(delta) < timedelta(minutes=1):
        return "just now"
    return format_timedelta(delta, add_direction=True, threshold=1, locale=locale())


def relative_day(value: datetime) -> str:
    """A due date without a time, by days in the team's zone: "today", "tomorrow", "3 days ago"."""
    zone = team_tz()
    days = (value.astimezone(zone).date() - now().astimezone(zone).date()).days
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if days == -1:
        return "yesterday"
    return format_timedelta(timedelta(days=days), add_direction=True, granularity="day", locale=locale())


def fmt_date(value: datetime) -> str:
    return value.astimezone(team_tz()).strftime("%Y-%m-%d")


def days_text(days: int) -> str:
    """A whole number of days: "1 day", "3 days" (Babel, team locale)."""
    return format_timedelta(timedelta(days=days), granularity="day", threshold=10_000, locale=locale())


def initials(name: str | None) -> str:
    """ "Rita Rep" -> "RR", "madonna" -> "M"."""
    parts = [p for p in (name or "").replace(".", " ").split() if p[:1].isalnum()]
    if not parts:
        return "?"
    return (parts[0][0] + (parts[-1][0] if len(parts) > 1 else "")).upper()


def split_list(text: str | None) -> list[str]:
    """A comma (or semicolon) separated form field as its items."""
    return [item.strip() for item in (text or "").replace(";", ",").split(",") if item.strip()]


def fmt_due(value: datetime | None, has_time: bool = True) -> str:
    """A planned activity's due day as people say it, with its time if it has one: "today 14:00",
    "tomorrow", "Mon 24 Nov 09:30" (further than a day away: the weekday and date, easier to plan with)."""
    if value is None:
        return "no date"
    local = value.astimezone(team_tz())
    days = (local.date() - now().astimezone(team_tz()).date()).days
    day = relative_day(value) if abs(days) <= 1 else local.strftime("%a %d %b").replace(" 0", " ")
    return f"{day} {local:%H:%M}" if has_time else day

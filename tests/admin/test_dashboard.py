"""The dashboard's period figures against numbers worked out here from the data the test made: won and lost,
conversion and won value by lead source, average deal size, per rep activities, won value and targets; and who
may set targets (admins, with a CSRF token)."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import select

from models.activities import log_activity
from models.deals import move_deal_to_stage
from models.reports import period_of
from models.schema import Role, SalesTarget
from tests.admin.conftest import fresh, sqlite_only
from tests.fixtures.factories import NOW, stage_named

NOVEMBER_START = NOW.replace(day=1, hour=0)  # the test app's clock: 2026-11-23 09:00 UTC, team zone UTC


def usd(amount: Decimal | int) -> str:
    return f"${Decimal(amount):,.0f}"


def row_of(html: str, table_id: str, label: str) -> list[str]:
    table = html[html.index(f'id="{table_id}"') :]
    table = table[: table.index("</table>")]
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S):
        cells = [
            re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        ]
        texts = [" ".join(c) for c in cells]
        if texts and texts[0] == label:
            return texts[1:]
    raise AssertionError(f"no row {label!r} in {table_id}")


def test_period_figures_match_the_data(app, session, make_user, make_contact, make_deal, login):
    rng = random.Random(10)
    reps = [make_user(role=Role.REP, name=n) for n in ("Ann Archer", "Bob Baker")]
    reps.append(make_user(role=Role.MANAGER, name="Mia Manager"))
    sources = ["Website", "Referral", None]
    won_stage, lost_stage = stage_named(session, "Won"), stage_named(session, "Lost")
    made = []
    for n in range(30):
        owner = rng.choice(reps)
        source = rng.choice(sources)
        contact = make_contact(f"Lead {n}", lead_source=source)
        outcome = rng.choice(["won", "lost", "open"])
        closed_at = NOW - timedelta(days=rng.randint(0, 60), hours=rng.randint(0, 8))
        value = Decimal(rng.randint(1, 90) * 100)
        deal = make_deal(
            title=f"Deal {n}",
            owner=owner,
            contacts=[contact],
            value=value,
            created_at=NOW - timedelta(days=70),
        )
        if outcome != "open":
            move_deal_to_stage(session, deal, won_stage if outcome == "won" else lost_stage, now=closed_at)
        made.append((owner.id, source, outcome, value, closed_at))
    activity_times = [NOW - timedelta(days=rng.randint(0, 50)) for _ in range(25)]
    authors = [rng.choice(reps) for _ in activity_times]
    for when, author in zip(activity_times, authors, strict=True):
        log_activity(session, kind="call", occurred_at=when, now=NOW, subject="Call", author=author)
    session.commit()

    # worked out here, from what was made
    in_period = [m for m in made if m[2] != "open" and m[4] >= NOVEMBER_START]
    won = [m for m in in_period if m[2] == "won"]
    lost = [m for m in in_period if m[2] == "lost"]
    by_source: dict[str, list[int | Decimal]] = defaultdict(lambda: [0, 0, Decimal(0)])
    for _owner, source, outcome, value, _at in in_period:
        entry = by_source[source or "No lead source"]
        if outcome == "won":
            entry[0] += 1
            entry[2] += value
        else:
            entry[1] += 1
    assert won and lost and len(by_source) == 3, "the random data covers every case"

    admin = login(make_user(role=Role.ADMIN))
    page = admin.get("/admin/?period=month").text
    assert re.search(r'id="period-title">November 2026<', page)
    total_won = sum(m[3] for m in won)
    assert re.search(rf'id="kpi-won">{re.escape(usd(total_won))}<', page)
    assert f"{len(won)} deals won, {len(lost)} lost" in page
    assert re.search(rf'id="kpi-conversion">{round(100 * len(won) / len(in_period))}%<', page)
    average = (total_won / len(won)).quantize(Decimal("1"))
    assert re.search(rf'id="kpi-average-size">{re.escape(usd(average))}<', page)
    for source, (w, lo, value) in by_source.items():
        assert row_of(page, "by-source", source) == [
            str(w),
            str(lo),
            f"{round(100 * w / (w + lo))}%",
            usd(value),
        ]
    for rep in reps:
        calls = sum(
            1 for when, a in zip(activity_times, authors, strict=True) if a is rep and when >= NOVEMBER_START
        )
        rep_won = [m for m in won if m[0] == rep.id]
        cells = row_of(page, "per-rep", rep.name)
        assert cells[0] == str(calls)
        assert cells[1].startswith(usd(sum(m[3] for m in rep_won)) if rep_won else "0")
        assert cells[2] == "No target"

    # the year: every closed deal made here closed in 2026
    year = admin.get("/admin/?period=year").text
    closed = [m for m in made if m[2] != "open"]
    assert re.search(rf'id="kpi-won">{re.escape(usd(sum(m[3] for m in closed if m[2] == "won")))}<', year)

    # a custom range: the last 7 days, both ends included
    first = (NOW - timedelta(days=6)).date()
    custom = admin.get(f"/admin/?period=custom&from={first}&to={NOW.date()}").text
    week = [m for m in made if m[2] == "won" and m[4].date() >= first]
    assert f"{len(week)} deal{'s' if len(week) != 1 else ''} won" in custom

    # targets: the admin sets Ann's for November; progress = her won value / target
    ann = reps[0]
    saved = admin.post("/admin/targets", {"period": "month", "currency": "usd", f"target-{ann.id}": "10,000"})
    assert saved.status_code == 302 and saved.headers["Location"].endswith("/admin/?period=month")
    page = admin.get("/admin/?period=month").text
    ann_won = sum(m[3] for m in won if m[0] == ann.id)
    assert ann_won > 0, "the random data gives Ann a win in November"
    assert row_of(page, "per-rep", ann.name)[2] == f"{ann_won / 100:.0f}% of $10,000"
    fresh(session)
    target = session.scalar(select(SalesTarget).where(SalesTarget.user_id == ann.id))
    assert (target.starts_on, target.ends_on, target.amount, target.currency) == (
        date(2026, 11, 1),
        date(2026, 12, 1),
        Decimal("10000.00"),
        "USD",
    )
    # October's target, set from October's page; the quarter without its own target adds up its months
    october = admin.get("/admin/?period=month&at=2026-10-01").text
    assert re.search(r'id="period-title">October 2026<', october)
    admin.post(
        "/admin/targets",
        {"period": "month", "at": "2026-10-01", "currency": "USD", f"target-{ann.id}": "5000"},
    )
    quarter = admin.get("/admin/?period=quarter").text
    assert re.search(r'id="period-title">Q4 2026<', quarter)
    assert "of $15,000" in row_of(quarter, "per-rep", ann.name)[2]
    # a blank amount removes the target
    admin.post("/admin/targets", {"period": "month", "currency": "USD", f"target-{ann.id}": ""})
    assert row_of(admin.get("/admin/?period=month").text, "per-rep", ann.name)[2] == "No target"


@sqlite_only
def test_only_admins_set_targets_with_a_csrf_token_and_bad_input_is_explained(app, session, make_user, login):
    rep = make_user(role=Role.REP, name="Ann")
    manager = login(make_user(role=Role.MANAGER))
    assert 'id="set-targets"' not in manager.get("/admin/").text
    assert manager.post("/admin/targets", {"period": "month", f"target-{rep.id}": "100"}).status_code == 403
    assert (
        login(rep).post("/admin/targets", {"period": "month", f"target-{rep.id}": "100"}).status_code == 403
    )
    admin = login(make_user(role=Role.ADMIN))
    assert 'id="set-targets"' in admin.get("/admin/").text
    no_token = admin.client.post("/admin/targets", data={"period": "month", f"target-{rep.id}": "100"})
    assert no_token.status_code == 400
    bad = admin.post(
        "/admin/targets",
        {"period": "month", "currency": "USD", f"target-{rep.id}": "lots"},
        follow_redirects=True,
    )
    assert "Targets not saved: Ann: &#39;lots&#39; is not an amount" in bad.text
    dollars = admin.post(
        "/admin/targets",
        {"period": "month", "currency": "dollars", f"target-{rep.id}": "1"},
        follow_redirects=True,
    )
    assert "is not a currency" in dollars.text
    fresh(session)
    assert session.scalars(select(SalesTarget)).all() == []
    # a custom period with its ends swapped: this month, and why
    swapped = admin.get("/admin/?period=custom&from=2026-11-20&to=2026-11-01").text
    assert "Showing this month: the period&#39;s last day is before its first day." in swapped
    assert re.search(r'id="period-title">November 2026<', swapped)
    assert "Traceback" not in admin.get("/admin/?period=custom&from=yesterday&to=2026-11-01").text


def test_periods_in_the_team_time_zone():
    today = date(2026, 11, 23)
    assert (period_of("month", today=today).starts_on, period_of("month", today=today).ends_on) == (
        date(2026, 11, 1),
        date(2026, 12, 1),
    )
    quarter = period_of("quarter", today=today)
    assert (quarter.starts_on, quarter.ends_on) == (date(2026, 10, 1), date(2027, 1, 1))
    start, end = period_of("month", today=today).bounds("Europe/Paris")
    assert (start.isoformat(), end.isoformat()) == ("2026-11-01T00:00:00+01:00", "2026-12-01T00:00:00+01:00")

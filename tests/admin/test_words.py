"""Every panel page, crawled as an admin and as a rep, speaks people's words: no raw enum values, no "None",
no Flask-Admin "Empty" placeholders, no "day(s)", no column names turned into labels ("Alerts Muted")."""

from __future__ import annotations

import html as htmllib
import re
from datetime import timedelta

from models.activities import log_activity
from models.schema import Notification, Role, Task
from tests.admin.conftest import sqlite_only
from tests.fixtures.factories import NOW

SCRIPT_OR_STYLE = re.compile(r"<(script|style|template)\b.*?</\1>", re.S | re.I)
TAG = re.compile(r"<[^>]+>")
ENUM_VALUES = (
    "open|won|lost|admin|manager|rep|email|call|meeting|note|task|todo|active|reconnect_needed|shared|private"
    "|stalled|stalled_deal|overdue_task|waiting_lead|browser|device|app|password|oauth2|ssl|starttls|none|in|out"
)
HIDDEN_DATA = re.compile(r"<div[^>]*id=\"(?:filter-groups-data|active-filters-data)\"[^>]*>.*?</div>", re.S)
CODE = re.compile(r"<code\b[^>]*>.*?</code>", re.S)
OPTION = re.compile(r"<option\b[^>]*>.*?</option>", re.S)
PLACEHOLDER = re.compile(r">\s*(None|Empty|null|nan)\s*<")
PROBLEMS = {
    "a (s) plural": re.compile(r"\w\(s\)"),
    "(UTC)": re.compile(r"\(UTC\)"),
    "snake_case": re.compile(r"(?<![\w@./-])[a-z]+_[a-z_]+(?![\w@./-])"),
    "a column name as label": re.compile(
        r"\b(?:Alerts Muted|Created At|Stall Days|Last Activity At|Owner Id)\b"
    ),
}
ENUM_CELL = re.compile(rf"<t[dh][^>]*>\s*(?:{ENUM_VALUES})\s*</t[dh]>")


def visible_text(page: str) -> str:
    body = page[page.find("<body") :]
    body = SCRIPT_OR_STYLE.sub(" ", body)
    body = HIDDEN_DATA.sub(" ", body)
    body = OPTION.sub(" ", body)
    body = CODE.sub(" ", body)  # configuration keys written as code ([api] webhook_retry_hours) are meant
    return htmllib.unescape(TAG.sub(" ", body))


def problems_in(page: str) -> list[str]:
    text = visible_text(page)
    found = []
    for name, pattern in PROBLEMS.items():
        for match in pattern.finditer(text):
            start = max(0, match.start() - 40)
            found.append(f"{name}: ...{' '.join(text[start : match.end() + 40].split())}...")
    for match in ENUM_CELL.finditer(page):
        found.append(f"raw value in a cell: {' '.join(match.group(0).split())}")
    for match in PLACEHOLDER.finditer(SCRIPT_OR_STYLE.sub(" ", page)):
        found.append(f"placeholder: {match.group(0)}")
    return found


def panel_urls(app, ids: dict[str, int]) -> list[str]:
    """Every GET page of the panel, with a real record for each id in its URL."""
    urls = []
    for rule in app.url_map.iter_rules():
        if (
            not rule.rule.startswith("/admin")
            or "GET" not in rule.methods
            or rule.endpoint.endswith("static")
        ):
            continue
        if any(
            part in rule.rule
            for part in ("/export/", "/ajax/", "/callback", "/attachment", "/suggest", "/raw")
        ):
            continue
        url = rule.rule
        for arg in rule.arguments:
            if arg == "kind":
                url = url.replace(f"<{arg}>", "deal")
            else:
                key = next((k for k in ids if k in rule.rule), "deal")
                url = re.sub(rf"<(?:\w+:)?{arg}>", str(ids[key]), url)
        if "<" in url:
            continue
        urls.append(url)
    # the model views' edit forms and a few filtered lists
    urls += [f"/admin/deal/edit/?id={ids['deal']}", f"/admin/contact/edit/?id={ids['contact']}"]
    urls += [f"/admin/company/edit/?id={ids['company']}", f"/admin/task/edit/?id={ids['task']}"]
    urls += ["/admin/?period=quarter", "/admin/board/?owner=all", "/admin/search/?q=Acme"]
    return sorted(set(urls))


@sqlite_only
def test_no_page_shows_a_raw_value_none_or_empty(
    app, session, make_user, make_company, make_contact, make_deal, login
):
    admin_user = make_user(role=Role.ADMIN, name="Ada Admin")
    rep = make_user(role=Role.REP, name="Rita Rep")
    company = make_company("Acme Corp", owner=rep)
    contact = make_contact("Jane Doe", company=company, owner=rep, lead_source="Website")
    deal = make_deal(title="Acme rollout", owner=rep, company=company, contacts=[contact])
    make_deal(title="Acme won", stage="Won", owner=rep, company=company)
    task = Task(title="Call Jane", deal=deal, due_at=NOW - timedelta(days=1), assignee=rep, created_at=NOW)
    session.add(task)
    log_activity(
        session,
        kind="call",
        occurred_at=NOW - timedelta(hours=2),
        now=NOW,
        subject="Intro call",
        author=rep,
        deal=deal,
    )
    session.add(
        Notification(
            key="stalled:x",
            kind="stalled_deal",
            user_id=rep.id,
            deal_id=deal.id,
            title="Acme rollout has stalled",
            detail={},
            created_at=NOW,
        )
    )
    session.commit()
    ids = {
        "deal": deal.id,
        "contact": contact.id,
        "company": company.id,
        "task": task.id,
        "stage": deal.stage_id,
        "pipeline": deal.pipeline_id,
        "user": rep.id,
    }
    report = []
    read = 0
    for who in (admin_user, rep):
        browser = login(who)
        for url in panel_urls(app, ids):
            response = browser.get(url)
            if response.status_code != 200 or "text/html" not in response.content_type:
                continue
            read += 1
            report += [f"{who.role.value} {url}: {p}" for p in problems_in(response.text)]
    assert read > 50, read  # both roles, every list, form, record page, board, dashboard, editor...
    assert not report, "\n".join(report)


def test_the_crawler_sees_what_people_would_see():
    page = (
        "<body><p>Acme rollout has stalled stalled_deal</p><table><tr><td> open </td><td>None</td>"
        "<td><em>Empty</em></td></tr></table><div>3 day(s) (UTC)</div><label>Alerts Muted</label>"
        '<div id="filter-groups-data" style="display:none">{"arg": "owner_equals"}</div>'
        "<script>var x_y = 1;</script><select><option>None (loopback only)</option></select></body>"
    )
    found = " | ".join(problems_in(page))
    for expected in (
        "snake_case",
        "raw value in a cell",
        ">None<",
        ">Empty<",
        "a (s) plural",
        "(UTC)",
        "Alerts Muted",
    ):
        assert expected in found, (expected, found)
    assert "owner_equals" not in found and "x_y" not in found and "loopback" not in found

"""My day: what one rep (or, for a manager, the whole team) should do next, gathered from the rules' owners.

Planned activities come from models.activities (overdue and due today, then the next days), stalled deals
and deals without a next step from models.rules, leads waiting for a first answer from models.rules, and the
latest emails filed on the rep's records. Emails are listed by subject, sender and time only: no body or
snippet, so mail from a private mailbox is never shown to someone who may not read it.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from models.activities import PlannedItem, due_state, end_of_local_day, open_activities
from models.rules import (
    DealWithoutNextStep,
    Listing,
    StalledDeal,
    WaitingLead,
    deals_without_next_step,
    stalled_deals,
    waiting_leads,
)
from models.schema import Activity, ActivityKind, Contact, Deal, Direction, activity_contacts

UPCOMING_DAYS = 7
SHOWN = 20
EMAILS_SHOWN = 10
RECENT = 50
"""The user's most recently active deals and contacts whose emails are read for the latest ones."""


@dataclass(frozen=True)
class EmailLine:
    activity_id: int
    subject: str
    from_address: str | None
    direction: Direction | None
    occurred_at: datetime
    deal_id: int | None
    contact_id: int | None
    """A contact of the rep's that the email is filed on (where the link goes when it has no deal)."""


@dataclass(frozen=True)
class MyDay:
    overdue: list[PlannedItem]
    today: list[PlannedItem]
    upcoming: list[PlannedItem]
    """Due in the next days (after today, within UPCOMING_DAYS)."""
    stalled: Listing[StalledDeal]
    no_next_step: Listing[DealWithoutNextStep]
    waiting: Listing[WaitingLead]
    emails: list[EmailLine]


def my_day(
    session: Session,
    *,
    user_id: int | None,
    now: datetime,
    tz: str | zoneinfo.ZoneInfo,
    default_stall_days: int,
    lead_window: timedelta,
    lead_response: timedelta,
) -> MyDay:
    """One rep's day (`user_id`), or the whole team's (None)."""
    planned = open_activities(
        session,
        due_before=end_of_local_day(now, tz, days=UPCOMING_DAYS),
        assignee_id=user_id,
        limit=300,
    )
    by_state: dict[str, list[PlannedItem]] = {"overdue": [], "today": [], "later": []}
    for item in planned:
        by_state[due_state(item.due_at, item.has_due_time, now, tz)].append(item)
    return MyDay(
        # the most overdue of hundreds is not news: the latest ones first are the ones still worth doing
        overdue=by_state["overdue"][-SHOWN * 2 :][::-1],
        today=by_state["today"],
        upcoming=by_state["later"][:SHOWN],
        stalled=stalled_deals(
            session, now=now, default_stall_days=default_stall_days, owner_id=user_id, limit=SHOWN
        ),
        no_next_step=deals_without_next_step(session, owner_id=user_id, limit=SHOWN),
        waiting=waiting_leads(
            session, now=now, window=lead_window, response=lead_response, owner_id=user_id, limit=SHOWN
        ),
        emails=latest_emails(session, user_id=user_id),
    )


def latest_emails(session: Session, *, user_id: int | None, limit: int = EMAILS_SHOWN) -> list[EmailLine]:
    """The latest emails filed on the user's deals or contacts (everyone's without a user), newest first."""
    columns = (
        Activity.id,
        Activity.subject,
        Activity.from_address,
        Activity.direction,
        Activity.occurred_at,
        Activity.deal_id,
    )
    if user_id is None:
        query = (
            select(*columns, select(activity_contacts.c.contact_id)
                   .where(activity_contacts.c.activity_id == Activity.id)
                   .limit(1)
                   .scalar_subquery())
            .where(Activity.kind == ActivityKind.EMAIL)
            .order_by(Activity.occurred_at.desc(), Activity.id.desc())
            .limit(limit)
        )  # fmt: skip
        return [EmailLine(*row) for row in session.execute(query)]
    # The newest emails on the user's records are on their most recently active ones (every email moves its
    # records' last_activity_at forward): read the newest `limit` emails of their RECENT most recently active
    # deals and contacts (ix_activities_deal_id_occurred_at, ix_activity_contacts_contact_id), not all mail.
    recent_deals = (
        select(Deal.id)
        .where(Deal.owner_id == user_id, Deal.last_activity_at.is_not(None))
        .order_by(Deal.last_activity_at.desc())
        .limit(RECENT)
    )
    recent_contacts = (
        select(Contact.id)
        .where(Contact.owner_id == user_id, Contact.last_activity_at.is_not(None))
        .order_by(Contact.last_activity_at.desc())
        .limit(RECENT)
    )
    on_deals = (
        select(Activity.id, Activity.occurred_at)
        .where(Activity.deal_id.in_(recent_deals), Activity.kind == ActivityKind.EMAIL)
        .order_by(Activity.occurred_at.desc())
        .limit(limit)
    )
    on_contacts = (
        select(Activity.id, Activity.occurred_at)
        .join(activity_contacts, activity_contacts.c.activity_id == Activity.id)
        .where(activity_contacts.c.contact_id.in_(recent_contacts), Activity.kind == ActivityKind.EMAIL)
        .order_by(Activity.occurred_at.desc())
        .limit(limit)
    )
    both = union(on_deals.subquery().select(), on_contacts.subquery().select()).subquery()
    contact = (
        select(activity_contacts.c.contact_id)
        .join(Contact, Contact.id == activity_contacts.c.contact_id)
        .where(activity_contacts.c.activity_id == Activity.id, Contact.owner_id == user_id)
        .limit(1)
        .scalar_subquery()
    )
    rows = session.execute(
        select(*columns, contact)
        .where(Activity.id.in_(select(both.c.id)))
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(limit)
    )
    return [EmailLine(*row) for row in rows]

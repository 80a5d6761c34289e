"""Record pages: a contact, a company or a deal with its activity timeline, and the forms on those pages.

The timeline is newest first: emails (subject, direction, snippet, the mailboxes that saw them, attachments,
the body on demand), calls, meetings, notes and completed tasks; a deal page adds its stage history. An
email's HTML was sanitized by the sync; it is cleaned once more here and shown only inside
`<iframe sandbox srcdoc=...>` without `allow-scripts` (and without `allow-same-origin`), so nothing in a
message can run or reach the panel. Writes go through the domain operations in models/.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import nh3
from flask import abort, flash, redirect, request, send_file, url_for
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import joinedload, selectinload
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.auth import safe_next
from admin.context import db, now, team_tz
from admin.formatting import (
    fmt_datetime,
    fmt_due,
    fmt_money,
    parse_local_date,
    parse_local_datetime,
    parse_local_time,
)
from admin.views.base import GuardedView, expose
from models import email_log
from models.activities import (
    KIND_WORDS,
    MANUAL_KINDS,
    complete_task,
    create_task,
    due_state,
    log_activity,
    next_activity_for_deals,
    planned_due,
)
from models.deals import move_deal_to_stage
from models.errors import DomainError
from models.history import (
    address_offers,
    adopt_address,
    ask_for_history,
    selection_for_companies,
    selection_for_contacts,
)
from models.merge import MergeKind, kept_id_of
from models.schema import (
    Activity,
    ActivityKind,
    Attachment,
    Company,
    Contact,
    Deal,
    DealStageChange,
    DealStatus,
    PlannedKind,
    Stage,
    StageKind,
    Task,
    User,
    activity_contacts,
    deal_contacts,
)

TIMELINE_PAGE = 100
TIMELINE_MAX = 1000


def clean_email_html(html: str) -> str:
    """Defence in depth: the sync stored sanitized HTML; clean it again before it leaves the server."""
    return nh3.clean(
        html, url_schemes={"http", "https", "mailto", "cid", "data"}, link_rel="noopener noreferrer"
    )


class RecordsView(GuardedView):
    def is_visible(self) -> bool:
        return False

    # ---- pages -----------------------------------------------------------------------------------------

    @expose("/")
    def index(self) -> BaseResponse:
        return redirect(url_for("contact.index_view"))

    @expose("/contact/<int:record_id>")
    def contact(self, record_id: int) -> BaseResponse | str:
        session = db()
        contact = session.get(Contact, record_id, options=[selectinload(Contact.emails)])
        if contact is None:
            return self._merged(MergeKind.CONTACT, record_id)
        # Collect the contact's activity ids first: without the fence PostgreSQL walks the whole
        # occurred_at index backwards looking for a busy contact's rows (1.6 s instead of 30 ms at 1M rows).
        mine = (
            select(activity_contacts.c.activity_id)
            .where(activity_contacts.c.contact_id == contact.id)
            .cte("contact_activities")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        where = Activity.id.in_(select(mine.c.activity_id))
        tasks = session.scalars(
            select(Task).where(Task.contact_id == contact.id).order_by(Task.done_at.is_not(None), Task.due_at)
        ).all()
        return self._render_record("contact", contact, where, tasks=tasks, deals=list(contact.deals))

    @expose("/company/<int:record_id>")
    def company(self, record_id: int) -> BaseResponse | str:
        session = db()
        company = session.get(Company, record_id, options=[selectinload(Company.domains)])
        if company is None:
            return self._merged(MergeKind.COMPANY, record_id)
        contacts = session.scalars(
            select(Contact).where(Contact.company_id == company.id).order_by(Contact.name).limit(100)
        ).all()
        deals = session.scalars(
            select(Deal).where(Deal.company_id == company.id).order_by(Deal.created_at.desc()).limit(100)
        ).all()
        tasks = session.scalars(
            select(Task)
            .where(Task.company_id == company.id)
            .order_by(Task.done_at.is_not(None), Task.due_at)
            .limit(100)
        ).all()
        return self._render_record(
            "company", company, Activity.company_id == company.id, contacts=contacts, deals=deals, tasks=tasks
        )

    @expose("/deal/<int:record_id>")
    def deal(self, record_id: int) -> str:
        session = db()
        deal = session.get(Deal, record_id)
        if deal is None:
            abort(404)
        history = session.scalars(
            select(DealStageChange)
            .where(DealStageChange.deal_id == deal.id)
            .options(
                joinedload(DealStageChange.from_stage),
                joinedload(DealStageChange.to_stage),
                joinedload(DealStageChange.changed_by),
            )
            .order_by(DealStageChange.changed_at.desc(), DealStageChange.id.desc())
        ).all()
        stages = session.scalars(
            select(Stage).where(Stage.pipeline_id == deal.pipeline_id).order_by(Stage.position)
        ).all()
        tasks = session.scalars(
            select(Task).where(Task.deal_id == deal.id).order_by(Task.done_at.is_not(None), Task.due_at)
        ).all()
        return self._render_record(
            "deal",
            deal,
            Activity.deal_id == deal.id,
            history=history,
            stages=stages,
            tasks=tasks,
            contacts=list(deal.contacts),
            may_move=permissions.can_move(deal),
            next_activity=next_activity_for_deals(session, [deal.id]).get(deal.id),
            offers=[
                (offer, [c for c in (session.get(Contact, i) for i in offer.contact_ids) if c is not None])
                for offer in address_offers(session, deal.id)
            ],
        )

    def _merged(self, kind: MergeKind, record_id: int) -> BaseResponse:
        """A record merged into another: its page leads to the one kept (404 for an id never used)."""
        kept = kept_id_of(db(), kind, record_id)
        if kept is None:
            abort(404)
        flash(f"{kind.value.capitalize()} #{record_id} was merged into this {kind.value}.", "info")
        return redirect(url_for(f".{kind.value}", record_id=kept))

    def _render_record(self, kind: str, record: Any, where: ColumnElement[bool], **extra: Any) -> str:
        session = db()
        limit = TIMELINE_MAX if request.args.get("all") else TIMELINE_PAGE
        activities = session.scalars(
            select(Activity)
            .where(where)
            .options(
                selectinload(Activity.sightings),
                joinedload(Activity.author),
                joinedload(Activity.deal).load_only(Deal.id, Deal.title),
            )
            .order_by(Activity.occurred_at.desc(), Activity.id.desc())
            .limit(limit + 1)
        ).all()
        has_more = len(activities) > limit
        activities = activities[:limit]
        attachments: dict[int, list[Any]] = defaultdict(list)
        if activities:
            rows = session.execute(
                select(
                    Attachment.id,
                    Attachment.activity_id,
                    Attachment.filename,
                    Attachment.content_type,
                    Attachment.size,
                    Attachment.content.is_not(None),
                )
                .where(Attachment.activity_id.in_([a.id for a in activities]))
                .order_by(Attachment.id)
            ).all()
            for row in rows:
                attachments[row[1]].append(row)
        opened_id = request.args.get("open", type=int)
        opened_html = None
        opened = next((a for a in activities if a.id == opened_id), None)
        if opened is not None and not permissions.can_read_body(opened):
            opened = None
        if opened is not None and opened.body_html:
            opened_html = clean_email_html(opened.body_html)
        users = session.scalars(select(User).where(User.active.is_(True)).order_by(User.name)).all()
        return self.page(
            "threadline/record.html",
            record=record,
            kind=kind,
            activities=activities,
            attachments=attachments,
            has_more=has_more,
            opened=opened,
            opened_html=opened_html,
            users=users,
            manual_kinds=MANUAL_KINDS,
            may_edit=permissions.can_write(record),
            may_assign=permissions.is_manager_or_admin(),
            can_write=permissions.can_write,
            can_refile=permissions.can_refile,
            can_read_body=permissions.can_read_body,
            me=permissions.user(),
            fmt_datetime=fmt_datetime,
            fmt_money=fmt_money,
            ActivityKind=ActivityKind,
            StageKind=StageKind,
            DealStatus=DealStatus,
            kind_words=KIND_WORDS,
            fmt_due=fmt_due,
            due_state=lambda t: due_state(t.due_at, t.has_due_time, now(), team_tz()),
            today=now().astimezone(team_tz()).date().isoformat(),
            **extra,
        )

    # ---- forms -----------------------------------------------------------------------------------------

    def _record(self, kind: str, record_id: int) -> Contact | Company | Deal:
        model = {"contact": Contact, "company": Company, "deal": Deal}.get(kind)
        if model is None:
            abort(404)
        record = db().get(model, record_id)
        if not isinstance(record, Contact | Company | Deal):
            abort(404)
        return record

    def _back(self, kind: str, record_id: int) -> BaseResponse:
        return redirect(url_for(f".{kind}", record_id=record_id))

    @expose("/<kind>/<int:record_id>/log", methods=("POST",))
    def log(self, kind: str, record_id: int) -> BaseResponse:
        record = self._record(kind, record_id)
        session = db()
        try:
            moment = now()
            occurred_at = parse_local_datetime(request.form.get("occurred_at")) or moment
            log_activity(
                session,
                kind=request.form.get("kind", ""),
                occurred_at=occurred_at,
                now=moment,
                subject=request.form.get("subject", "")[:998],
                body=request.form.get("body", ""),
                author=permissions.user(),
                contacts=[record] if isinstance(record, Contact) else [],
                company=record if isinstance(record, Company) else None,
                deal=record if isinstance(record, Deal) else None,
            )
            session.commit()
            flash("Activity logged.", "success")
        except (DomainError, ValueError) as exc:
            session.rollback()
            message = str(exc) if isinstance(exc, DomainError) else "choose call, meeting or note"
            flash(f"Not logged: {message}", "error")
        return self._back(kind, record_id)

    @expose("/<kind>/<int:record_id>/earlier", methods=("POST",))
    def earlier(self, kind: str, record_id: int) -> BaseResponse:
        """The "Find earlier emails" button: the skipped mail of the contact's addresses (of a company: its
        contacts' addresses and its domains) is looked up in the index and queued for the daemon to log."""
        record = self._record(kind, record_id)
        if isinstance(record, Deal):
            abort(404)
        permissions.require_write(record)
        session = db()
        if isinstance(record, Contact):
            selection = selection_for_contacts(session, [record.id])
        else:
            selection = selection_for_companies(session, [record.id])
        found = ask_for_history(session, selection, now=now())
        session.commit()
        if found:
            plural = "s" if found != 1 else ""
            flash(
                f"Found {found} earlier email{plural} not logged yet: they are fetched again and appear on "
                "the timeline within one poll interval of the daemon (or after the next sync).",
                "success",
            )
        else:
            flash("No earlier emails: the skipped mail kept for these addresses holds none.", "success")
        return self._back(kind, record_id)

    @expose("/deal/<int:record_id>/adopt", methods=("POST",))
    def adopt(self, record_id: int) -> BaseResponse:
        """One click on the deal page: an address that replied into the deal's thread becomes another
        address of the contact; the deal's emails from it are linked, and its earlier mail is relinked."""
        session = db()
        deal = session.get(Deal, record_id)
        contact_id = request.form.get("contact_id", "")
        contact = session.get(Contact, int(contact_id)) if contact_id.isdigit() else None
        if deal is None or contact is None:
            abort(404)
        permissions.require_write(contact)
        address = request.form.get("address", "")
        try:
            linked = adopt_address(session, contact, address, deal_id=deal.id)
            session.commit()
            flash(f"{address} added to {contact}; {linked} email(s) of this deal linked.", "success")
        except DomainError as exc:
            session.rollback()
            flash(f"Not added: {exc}", "error")
        return self._back("deal", record_id)

    @expose("/<kind>/<int:record_id>/task", methods=("POST",))
    def add_task(self, kind: str, record_id: int) -> BaseResponse:
        """Plan an activity on this record: a type, a subject, a day and an optional time, an assignee."""
        record = self._record(kind, record_id)
        session = db()
        try:
            assignee: User | None = permissions.user()
            wanted = request.form.get("assignee_id", "")
            if permissions.is_manager_or_admin() and wanted.isdigit():
                assignee = session.get(User, int(wanted))
            if request.form.get("due_on"):
                due_at, has_time = planned_due(
                    parse_local_date(request.form.get("due_on")),
                    parse_local_time(request.form.get("due_time")),
                    team_tz(),
                )
            else:  # one date-and-time field (older forms, scripts)
                due_at, has_time = parse_local_datetime(request.form.get("due_at")), True
            task = create_task(
                session,
                title=request.form.get("title", "")[:500],
                now=now(),
                kind=request.form.get("kind") or PlannedKind.TODO,
                due_at=due_at,
                has_due_time=has_time,
                assignee=assignee,
                deal=record if isinstance(record, Deal) else None,
                contact=record if isinstance(record, Contact) else None,
                company=record if isinstance(record, Company) else None,
                notes=request.form.get("notes", ""),
            )
            session.commit()
            flash(f"{KIND_WORDS[task.kind]} planned.", "success")
        except DomainError as exc:
            session.rollback()
            flash(f"Not planned: {exc}", "error")
        return self._back(kind, record_id)

    @expose("/task/<int:task_id>/complete", methods=("POST",))
    def complete(self, task_id: int) -> BaseResponse:
        session = db()
        task = session.get(Task, task_id)
        if task is None:
            abort(404)
        permissions.require_write(task)
        complete_task(session, task, now=now(), by=permissions.user())
        session.commit()
        flash(f"Done: {task.title}. Logged on the timeline; plan the next step?", "success")
        back = safe_next(request.form.get("next"))
        if back is not None:
            return redirect(back)
        if task.deal_id is not None:
            return self._back("deal", task.deal_id)
        if task.contact_id is not None:
            return self._back("contact", task.contact_id)
        return redirect(url_for("task.index_view"))

    @expose("/deal/<int:record_id>/move", methods=("POST",))
    def move(self, record_id: int) -> BaseResponse:
        session = db()
        deal = session.get(Deal, record_id)
        stage_id = request.form.get("stage_id", "")
        stage = session.get(Stage, int(stage_id)) if stage_id.isdigit() else None
        if deal is None or stage is None:
            abort(404)
        if not permissions.can_move(deal):
            abort(403)
        try:
            change = move_deal_to_stage(
                session,
                deal,
                stage,
                now=now(),
                by=permissions.user(),
                lost_reason=request.form.get("lost_reason"),
            )
            session.commit()
            flash(f"Moved to {stage.name}." if change else f"Already in {stage.name}.", "success")
        except DomainError as exc:
            session.rollback()
            flash(str(exc), "error")
        return self._back("deal", record_id)

    @expose("/email/<int:activity_id>/link", methods=("GET", "POST"))
    def link_email(self, activity_id: int) -> BaseResponse | str:
        session = db()
        activity = session.get(Activity, activity_id)
        if activity is None or activity.kind != ActivityKind.EMAIL:
            abort(404)
        if not permissions.can_refile(activity):
            abort(403)  # the email, not only the chosen deal: a rep cannot take others' mail onto their deal
        candidates = candidate_deals(activity)
        if request.method == "POST":
            deal_id = request.form.get("deal_id", "")
            deal = session.get(Deal, int(deal_id)) if deal_id.isdigit() else None
            if deal is None:
                flash("Choose a deal.", "error")
            elif not permissions.can_write(deal):
                abort(403)
            else:
                link_email_to_deal(activity, deal)
                session.commit()
                flash(f"Email linked to {deal.title}.", "success")
                return redirect(url_for(".deal", record_id=deal.id))
        return self.page(
            "threadline/link_email.html",
            activity=activity,
            candidates=candidates,
            readable=permissions.can_read_body(activity),
            fmt_datetime=fmt_datetime,
            fmt_money=fmt_money,
            can_write=permissions.can_write,
        )

    # ---- files -----------------------------------------------------------------------------------------

    @expose("/attachment/<int:attachment_id>")
    def attachment(self, attachment_id: int) -> BaseResponse:
        row = db().get(Attachment, attachment_id)
        if row is None or row.content is None:
            abort(404)
        if not permissions.can_read_body(row.activity):
            abort(403)  # an attachment of a private mailbox's mail: its owner's only
        # always a download, never rendered: an attachment may be HTML or SVG carrying script
        response = send_file(
            io.BytesIO(row.content),
            mimetype="application/octet-stream",
            as_attachment=True,
            download_name=row.filename or f"attachment-{row.id}",
        )
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response


def candidate_deals(activity: Activity) -> list[Deal]:
    """Open deals of the email's contacts and company: the choices when the sync could not pick one."""
    contact_ids = [c.id for c in activity.contacts]
    conditions: list[ColumnElement[bool]] = []
    if contact_ids:
        conditions.append(
            Deal.id.in_(select(deal_contacts.c.deal_id).where(deal_contacts.c.contact_id.in_(contact_ids)))
        )
    if activity.company_id is not None:
        conditions.append(Deal.company_id == activity.company_id)
    if not conditions:
        return []
    return list(
        db().scalars(
            select(Deal)
            .where(or_(*conditions), Deal.status == DealStatus.OPEN)
            .order_by(func.coalesce(Deal.last_activity_at, Deal.created_at).desc())
            .limit(50)
        )
    )


def link_email_to_deal(activity: Activity, deal: Deal) -> None:
    """File an email on the deal a person chose (the rule lives in models.email_log)."""
    email_log.link_email_to_deal(db(), activity, deal, now=now(), by=permissions.user())

"""Quick add: a contact, a company, a deal or a planned activity from any page, in one short form each.

Saving opens the new record (an activity opens the record it is planned on). The contact form creates its
company inline when the name is new; "Add deal" on a contact or company page opens the deal form prefilled
(the contact, and the contact's company). A mistake keeps everything typed and says what to fix, next to the
form. Every write goes through models' operations: models.contacts, models.deals, models.activities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import flash, redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now, team_tz
from admin.formatting import parse_local_date, parse_local_time, split_list
from admin.views.base import GuardedView, expose
from models.activities import KIND_WORDS, create_task, planned_due
from models.contacts import company_named, create_company, create_contact
from models.deals import create_deal, default_pipeline, parse_money
from models.errors import DomainError
from models.money import DEFAULT_CURRENCY
from models.schema import Company, Contact, Deal, Pipeline, PlannedKind, Stage, StageKind, User

COMPANY_CHOICES = 500
"""Company names offered as suggestions in the forms (typing a new name creates one)."""


def _text(name: str, limit: int = 300) -> str:
    return (request.form.get(name) or "").strip()[:limit]


def _record_id(name: str) -> int | None:
    value = request.values.get(name, "")
    return int(value) if value.isdigit() else None


class QuickAddView(GuardedView):
    def is_visible(self) -> bool:
        return False

    @expose("/")
    def index(self) -> BaseResponse:
        return redirect(url_for(".contact"))

    def _owner(self) -> User:
        """Managers and admins may give the record to someone; a rep's records are their own."""
        me = permissions.user()
        wanted = _record_id("owner_id")
        if wanted is not None and permissions.is_manager_or_admin():
            chosen = db().get(User, wanted)
            if chosen is not None and chosen.active:
                return chosen
        return me

    def _form(self, template: str, values: dict[str, Any], **extra: Any) -> str:
        session = db()
        return self.page(
            template,
            values=values,
            users=session.scalars(select(User).where(User.active.is_(True)).order_by(User.name)).all(),
            me=permissions.user(),
            may_assign=permissions.is_manager_or_admin(),
            company_names=session.scalars(select(Company.name).order_by(Company.name).limit(COMPANY_CHOICES)),
            **extra,
        )

    def _save(self, create: Callable[[], Any], endpoint: str, what: str) -> BaseResponse | None:
        """Run `create`, commit and open the new record; a mistake rolls back and is shown (None)."""
        session = db()
        try:
            record = create()
            session.commit()
        except DomainError as exc:
            session.rollback()
            flash(f"Not saved: {exc}", "error")
            return None
        flash(f"{what} added: {record}", "success")
        return redirect(url_for(endpoint, record_id=record.id))

    # ---- contact --------------------------------------------------------------------------------------

    @expose("/contact", methods=("GET", "POST"))
    def contact(self) -> BaseResponse | str:
        values: dict[str, Any] = dict(request.form) if request.method == "POST" else {}
        if request.method == "GET":
            company = db().get(Company, _record_id("company_id") or 0)
            values["company"] = company.name if company else ""
        if request.method == "POST":
            session = db()

            def create() -> Contact:
                owner = self._owner()
                return create_contact(
                    session,
                    name=_text("name"),
                    now=now(),
                    emails=split_list(_text("emails", 2000)),
                    phone=_text("phone", 64),
                    title=_text("job_title", 200),
                    company=company_named(session, _text("company"), now=now(), owner=owner),
                    owner=owner,
                    lead_source=_text("lead_source", 100),
                )

            saved = self._save(create, "records.contact", "Contact")
            if saved is not None:
                return saved
        return self._form("threadline/quick_contact.html", values)

    # ---- company --------------------------------------------------------------------------------------

    @expose("/company", methods=("GET", "POST"))
    def company(self) -> BaseResponse | str:
        values: dict[str, Any] = dict(request.form) if request.method == "POST" else {}
        if request.method == "POST":
            saved = self._save(
                lambda: create_company(
                    db(),
                    name=_text("name"),
                    now=now(),
                    domains=split_list(_text("domains", 2000)),
                    owner=self._owner(),
                ),
                "records.company",
                "Company",
            )
            if saved is not None:
                return saved
        return self._form("threadline/quick_company.html", values)

    # ---- deal -----------------------------------------------------------------------------------------

    @expose("/deal", methods=("GET", "POST"))
    def deal(self) -> BaseResponse | str:
        session = db()
        contact = session.get(Contact, _record_id("contact_id") or 0)
        values: dict[str, Any] = dict(request.form) if request.method == "POST" else {}
        if request.method == "GET":
            company = session.get(Company, _record_id("company_id") or 0)
            if company is None and contact is not None:
                company = contact.company
            values.update(
                company=company.name if company else "",
                title=f"{company.name} deal" if company else "",
                currency=DEFAULT_CURRENCY,
            )
        if request.method == "POST":

            def create() -> Deal:
                stage = session.get(Stage, _record_id("stage_id") or 0)
                owner = self._owner()
                return create_deal(
                    session,
                    title=_text("title"),
                    now=now(),
                    pipeline=stage.pipeline if stage else default_pipeline(session),
                    stage=stage,
                    value=parse_money(_text("value", 40) or "0"),
                    currency=_text("currency", 40) or DEFAULT_CURRENCY,
                    company=company_named(session, _text("company"), now=now(), owner=owner),
                    contacts=[contact] if contact is not None else [],
                    owner=owner,
                    expected_close_on=parse_local_date(_text("expected_close_on")),
                    by=permissions.user(),
                )

            saved = self._save(create, "records.deal", "Deal")
            if saved is not None:
                return saved
        pipelines = session.scalars(select(Pipeline).order_by(Pipeline.position, Pipeline.id)).all()
        return self._form(
            "threadline/quick_deal.html",
            values,
            contact=contact,
            pipelines=pipelines,
            open_kind=StageKind.OPEN,
        )

    # ---- planned activity -----------------------------------------------------------------------------

    @expose("/activity", methods=("GET", "POST"))
    def activity(self) -> BaseResponse | str:
        session = db()
        deal = session.get(Deal, _record_id("deal_id") or 0)
        contact = session.get(Contact, _record_id("contact_id") or 0)
        company = session.get(Company, _record_id("company_id") or 0)
        values: dict[str, Any] = dict(request.form) if request.method == "POST" else {}
        if request.method == "GET":
            values.update(kind=PlannedKind.CALL.value, due_on=now().astimezone(team_tz()).date().isoformat())
        if request.method == "POST":
            try:
                due_at, has_time = planned_due(
                    parse_local_date(_text("due_on")), parse_local_time(_text("due_time")), team_tz()
                )
                if due_at is None:
                    raise DomainError("choose the day it is due")
                assignee = self._owner()
                task = create_task(
                    session,
                    title=_text("title", 500),
                    now=now(),
                    kind=_text("kind", 16) or PlannedKind.TODO,
                    due_at=due_at,
                    has_due_time=has_time,
                    assignee=assignee,
                    deal=deal,
                    contact=contact,
                    company=company,
                    notes=request.form.get("notes", ""),
                )
                db().commit()
                flash(f"{KIND_WORDS[task.kind]} planned: {task.title}", "success")
                if deal is not None:
                    return redirect(url_for("records.deal", record_id=deal.id))
                if contact is not None:
                    return redirect(url_for("records.contact", record_id=contact.id))
                if company is not None:
                    return redirect(url_for("records.company", record_id=company.id))
                return redirect(url_for("myday.index"))
            except DomainError as exc:
                session.rollback()
                flash(f"Not planned: {exc}", "error")
        return self._form(
            "threadline/quick_activity.html",
            values,
            deal=deal,
            contact=contact,
            company=company,
            kind_words=KIND_WORDS,
        )

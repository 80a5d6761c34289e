"""The pipeline board: one kanban per pipeline, and the move endpoint that its drag and drop calls.

Numbers come from models.reports.board; a move goes through models.deals.move_deal_to_stage (so the stage
history is recorded) and answers with the new column totals, which the page's script (static/board.js) writes
in place. Open stages are columns of compact cards; won and lost stages are drop zones with a count, not
columns that grow forever. A rep sees their own deals unless they pick someone else (or everyone).

The keyboard alternative is one "Move" dialog for the whole page (each card has a small "Move" button that
opens it), posting to the same endpoint; the endpoint also takes a plain form post.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import flash, jsonify, redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now, settings, team_tz
from admin.formatting import (
    days_text,
    fmt_date,
    fmt_datetime,
    initials,
    money,
    money_text,
    relative,
    relative_day,
)
from admin.views.base import GuardedView, expose
from models.activities import KIND_WORDS
from models.deals import move_deal_to_stage
from models.errors import DomainError
from models.reports import Board, BoardCard, board
from models.schema import Deal, Pipeline, Stage, StageKind, User

CARDS_PER_COLUMN = 50
EVERYONE = "all"


@dataclass(frozen=True)
class NextStep:
    """What a card says about the deal's next planned activity, and how urgent it is (Pipedrive's colours)."""

    status: str
    """overdue | today | later | none"""
    label: str
    title: str


def next_step(card: BoardCard, current: datetime) -> NextStep:
    planned = card.next_activity
    if planned is None:
        return NextStep("none", "No next step", "No activity planned: plan the next step")
    kind = KIND_WORDS[planned.kind]
    if planned.due_at is None:
        return NextStep("later", planned.title, f"{kind}: {planned.title}")
    if planned.has_due_time:
        when, exact = relative(planned.due_at), fmt_datetime(planned.due_at)
    else:
        when, exact = relative_day(planned.due_at), fmt_date(planned.due_at)
    return NextStep(
        planned.state(current, team_tz()),
        f"{planned.title} · {when}",
        f"{kind}: {planned.title}, due {exact}",
    )


def column_totals(result: Board) -> list[dict[str, Any]]:
    return [
        {
            "stage_id": c.stage_id,
            "count": c.count,
            "total": money_text(c.total),
            "weighted": money_text(c.weighted),
            "more": c.more,
        }
        for c in result.columns
    ]


def more_deals_url(stage_id: int, owner_id: int | None) -> str:
    """The deal list filtered to one column of the board (the cards the board does not show)."""
    filters: dict[str, Any] = {"flt1_stage_equals": stage_id}
    if owner_id:
        filters["flt2_owner_equals"] = owner_id
    return url_for("deal.index_view", **filters)


def chosen_owner(raw: str | None, users: list[User]) -> int | None:
    """The owner filter: a user's id, "all" for everyone; by default a rep sees their own deals."""
    if raw == EVERYONE:
        return None
    if raw and raw.isdigit() and int(raw) in {u.id for u in users}:
        return int(raw)
    return None if permissions.is_manager_or_admin() else permissions.user().id


class BoardView(GuardedView):
    @expose("/")
    def index(self) -> str:
        session = db()
        config = settings()
        pipelines = list(session.scalars(select(Pipeline).order_by(Pipeline.position, Pipeline.id)))
        if not pipelines:
            return self.page("threadline/board.html", board=None, pipelines=[], users=[], owner_id=None)
        pipeline_id = request.args.get("pipeline", type=int)
        pipeline = next((p for p in pipelines if p.id == pipeline_id), pipelines[0])
        users = list(session.scalars(select(User).order_by(User.name)))
        owner_id = chosen_owner(request.args.get("owner"), users)
        current = now()
        result = board(
            session,
            pipeline_id=pipeline.id,
            now=current,
            default_stall_days=config.alerts.stall_days,
            owner_id=owner_id,
            cards_per_column=CARDS_PER_COLUMN,
        )
        is_manager = permissions.is_manager_or_admin()
        me = permissions.user()
        return self.page(
            "threadline/board.html",
            board=result,
            columns=[c for c in result.columns if c.kind == StageKind.OPEN],
            closers=[c for c in result.columns if c.kind != StageKind.OPEN],
            pipeline=pipeline,
            pipelines=pipelines,
            users=users,
            me=me,
            owner_id=owner_id,
            everyone=EVERYONE,
            may_move=lambda card: is_manager or card.owner_id == me.id,
            money=money,
            money_text=money_text,
            initials=initials,
            days_text=days_text,
            next_step=lambda card: next_step(card, current),
            more_url=lambda stage_id: more_deals_url(stage_id, owner_id),
        )

    @expose("/move", methods=("POST",))
    def move(self) -> BaseResponse | tuple[BaseResponse, int]:
        wants_json = request.is_json
        data: dict[str, Any] = (request.get_json(silent=True) or {}) if wants_json else request.form.to_dict()

        def fail(message: str, status: int) -> BaseResponse | tuple[BaseResponse, int]:
            if wants_json:
                return jsonify({"ok": False, "error": message}), status
            flash(message, "error")
            return redirect(request.referrer or url_for("board.index"))

        try:
            deal_id = int(data.get("deal_id", ""))
            stage_id = int(data.get("stage_id", ""))
        except (TypeError, ValueError):
            return fail("Choose a deal and a stage.", 400)
        session = db()
        deal = session.get(Deal, deal_id)
        stage = session.get(Stage, stage_id)
        if deal is None or stage is None:
            return fail("This deal or stage no longer exists. Reload the board.", 404)
        if not permissions.can_move(deal):
            return fail("You can only move your own deals.", 403)
        lost_reason = str(data.get("lost_reason") or "").strip()[:500] or None
        try:
            change = move_deal_to_stage(
                session, deal, stage, now=now(), by=permissions.user(), lost_reason=lost_reason
            )
            session.commit()
        except DomainError as exc:
            session.rollback()
            return fail(f"Not moved: {exc}.", 400)
        if not wants_json:
            flash(f"{deal.title} moved to {stage.name}.", "success")
            return redirect(request.referrer or url_for("board.index", pipeline=deal.pipeline_id))
        owner_raw = data.get("owner_id")
        owner_id = int(owner_raw) if isinstance(owner_raw, int | str) and str(owner_raw).isdigit() else None
        result = board(
            session,
            pipeline_id=deal.pipeline_id,
            now=now(),
            default_stall_days=settings().alerts.stall_days,
            owner_id=owner_id,
            cards_per_column=0,
        )
        return jsonify(
            {
                "ok": True,
                "changed": change is not None,
                "deal_id": deal.id,
                "stage_id": stage.id,
                "stage_name": stage.name,
                "stage_kind": stage.kind.value,
                "columns": column_totals(result),
            }
        )

"""Merging duplicates in the panel: the list of likely duplicates, choosing a record to merge with, the
preview of what moves, and the merge itself (models.merge owns the rule; models.duplicates the suggestions).

Anyone logged in may look; merging needs the right to change both records (admin.permissions.can_write: a
rep merges only records they own). The merge is a CSRF-protected POST; a GET never changes anything.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now
from admin.views.base import GuardedView, action, expose
from models.duplicates import Rule, find_duplicates
from models.errors import DomainError
from models.merge import MergeKind, find_record, merge_records, plan_merge
from models.search import search

_KINDS = {"contacts": MergeKind.CONTACT, "companies": MergeKind.COMPANY}


def _kind(name: str) -> MergeKind:
    kind = _KINDS.get(name)
    if kind is None:
        abort(404)
    return kind


def _record(kind: MergeKind, value: str | None) -> Any:
    if not value or not value.isdigit():
        return None
    return db().get(kind.model, int(value))


class MergeView(GuardedView):
    """/admin/merge: likely duplicates; /admin/merge/<kind>/choose, /preview and the merge POST."""

    @expose("/")
    def index(self) -> str:
        try:
            rule = Rule(request.args.get("rule") or Rule.CONTACT_NAME)
        except ValueError:
            abort(404)
        found = find_duplicates(db(), [rule])
        return self.page("threadline/duplicates.html", found=found, rule=rule, rules=list(Rule))

    @expose("/<kinds>/choose")
    def choose(self, kinds: str) -> str:
        kind = _kind(kinds)
        keep = _record(kind, request.args.get("keep"))
        if keep is None:
            abort(404)
        query = request.args.get("q", "").strip()
        hits: list[Any] = []
        if query:
            results = search(db(), query, limit=20)
            hits = results.contacts if kind is MergeKind.CONTACT else results.companies
            hits = [h for h in hits if h.record_id != keep.id]
        return self.page(
            "threadline/merge_choose.html", kind=kind, kinds=kinds, keep=keep, query=query, hits=hits
        )

    @expose("/<kinds>/preview")
    def preview(self, kinds: str) -> str:
        kind = _kind(kinds)
        session = db()
        keep, other = _record(kind, request.args.get("keep")), _record(kind, request.args.get("other"))
        if keep is None or other is None:
            abort(404)
        try:
            plan = plan_merge(session, kind, keep, other)
        except DomainError as exc:
            flash(str(exc), "error")
            plan = None
        may_merge = permissions.can_write(keep) and permissions.can_write(other)
        return self.page(
            "threadline/merge_preview.html",
            kind=kind,
            kinds=kinds,
            keep=keep,
            other=other,
            plan=plan,
            may_merge=may_merge,
        )

    @expose("/<kinds>/merge", methods=("POST",))
    def merge(self, kinds: str) -> BaseResponse:
        kind = _kind(kinds)
        session = db()
        try:
            keep = find_record(session, kind, request.form.get("keep", ""))
            other = find_record(session, kind, request.form.get("other", ""))
        except DomainError as exc:
            flash(f"Not merged: {exc}", "error")
            return redirect(url_for(".index"))
        if not (permissions.can_write(keep) and permissions.can_write(other)):
            abort(403)
        try:
            result = merge_records(session, kind, keep.id, other.id, now=now(), by=permissions.user())
            session.commit()
        except DomainError as exc:
            session.rollback()
            flash(f"Not merged: {exc}", "error")
            return redirect(url_for(".index"))
        flash(
            f"Merged {result.plan.other_name} into {result.plan.keep_name}: {result.plan.summary()}.",
            "success",
        )
        return redirect(url_for(f"records.{kind.value}", record_id=result.plan.keep_id))


class MergeListAction:
    """A list view's "Merge" action for two selected rows: opens the merge preview."""

    merge_kinds = "contacts"

    @action("merge", "Merge the two selected")
    def action_merge(self, ids: list[str]) -> BaseResponse:
        if len(ids) != 2:
            flash("Select exactly two records to merge.", "error")
            return redirect(request.referrer or url_for("merge.index"))
        first, second = sorted(ids, key=int)
        return redirect(url_for("merge.preview", kinds=self.merge_kinds, keep=first, other=second))

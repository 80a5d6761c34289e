"""API keys in the panel: everyone sees and makes their own; an admin sees everyone's and makes keys for
anyone. A new key's secret is shown once, on the page answering its creation, and never again."""

from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now
from admin.formatting import fmt_datetime
from admin.views.base import GuardedView, expose
from models.apikeys import create_api_key, get_api_key, list_api_keys, revoke_api_key
from models.errors import DomainError
from models.schema import User
from models.users import find_user


class ApiKeysView(GuardedView):
    def _page(self, session: Session, *, new_token: str | None = None, status: int = 200) -> tuple[str, int]:
        me = permissions.user()
        keys = list_api_keys(session, None if permissions.is_admin() else me)
        users = session.query(User).filter(User.active.is_(True)).order_by(User.name).all()
        html = self.page(
            "threadline/api/keys.html",
            keys=keys,
            users=users,
            me=me,
            is_admin=permissions.is_admin(),
            new_token=new_token,
            fmt_datetime=fmt_datetime,
        )
        return html, status

    @expose("/")
    def index(self) -> tuple[str, int]:
        return self._page(db())

    @expose("/create", methods=("POST",))
    def create(self) -> BaseResponse | tuple[str, int]:
        session = db()
        me = permissions.user()
        owner = me
        wanted = (request.form.get("user") or "").strip()
        if wanted and wanted != me.email:
            if not permissions.is_admin():
                abort(403)
            owner = find_user(session, wanted)  # type: ignore[assignment]
            if owner is None:
                flash(f"No user {wanted}.", "danger")
                return self._page(session, status=422)
        try:
            made = create_api_key(session, owner, name=request.form.get("name", ""), now=now(), created_by=me)
        except DomainError as exc:
            session.rollback()
            flash(str(exc), "danger")
            return self._page(session, status=422)
        session.commit()
        flash(f"Key {made.key.name!r} made for {owner.email}. Copy it now: it is not shown again.", "success")
        return self._page(session, new_token=made.token)

    @expose("/<int:key_id>/revoke", methods=("POST",))
    def revoke(self, key_id: int) -> BaseResponse:
        session = db()
        try:
            key = get_api_key(session, key_id)
        except DomainError:
            abort(404)
        if key.user_id != permissions.user().id and not permissions.is_admin():
            abort(403)
        if revoke_api_key(session, key, now=now()):
            session.commit()
            flash(f"Key {key.name!r} revoked: it no longer works.", "success")
        return redirect(url_for("apikeys.index"))

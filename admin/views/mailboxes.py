"""Mailboxes in the panel: admins add, edit, pause and remove them; a rep connects their own and sees how its
sync goes (last sync, messages logged, errors, reconnect needed).

Mailboxes of the config file ([[mailboxes]]) are listed read-only. "Connect" runs the authorization code flow
with PKCE through the shell's connector (admin.connect): the browser goes to the provider's consent page and
comes back to `/admin/mailboxes/callback`, where the grant is stored; the running daemon picks the mailbox up
within its reload interval. Every write goes through models.mailboxes; every POST carries the CSRF token.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from flask import abort, flash, g, make_response, redirect, request, session, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import connector, db, now, settings
from admin.formatting import fmt_datetime
from admin.security import content_security_policy
from admin.views.base import GuardedView, commit, expose
from models.errors import DomainError
from models.mailboxes import (
    MailboxFields,
    MailboxOverview,
    ReconnectNeeded,
    create_mailbox,
    delete_grant,
    mailbox_fields,
    mailbox_overview,
    own_mailbox_fields,
    pause_mailbox,
    reconnect_needed_of,
    remove_mailbox,
    resume_mailbox,
    self_connect_providers,
    set_sharing,
    update_mailbox,
)
from models.schema import Mailbox, User
from models.secrets import SecretBox, secret_box
from settings import MailboxAuth, MailboxSettings, MailboxSource, Sharing
from settings.model import SECURITY_CHOICES

PENDING = "mailbox_connect"
AUTH_LABELS = {
    MailboxAuth.PASSWORD: "Password",
    MailboxAuth.OAUTH: "OAuth (each person signs in)",
    MailboxAuth.APP: "OAuth app-only (tenant admin consent)",
}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _box() -> SecretBox | None:
    return secret_box(settings().secrets)


def reconnect_needed() -> list[ReconnectNeeded]:
    """The logged-in user's mailboxes that need reconnecting (the banner on every page), once per request."""
    if "reconnect_needed" not in g:
        g.reconnect_needed = reconnect_needed_of(db(), permissions.user(), settings().mailboxes)
    found = g.reconnect_needed
    assert isinstance(found, list)
    return found


class MailboxesView(GuardedView):
    @expose("/")
    def index(self) -> BaseResponse:
        me = permissions.user()
        overview = mailbox_overview(
            db(),
            settings().mailboxes,
            box=_box(),
            owner=None if permissions.is_admin() else me.email,
        )
        page = self.page(
            "threadline/mailboxes.html",
            mailboxes=overview,
            is_admin=permissions.is_admin(),
            may_connect=self._may_connect,
            providers=sorted(settings().oauth),
            own_providers=self_connect_providers(settings().oauth),
            has_connector=connector() is not None,
            fmt_datetime=fmt_datetime,
        )
        response = make_response(page)
        # the Connect forms end at the providers' consent pages
        origins = sorted({_origin(p.authorize_url) for p in settings().oauth.values() if p.authorize_url})
        response.headers["Content-Security-Policy"] = content_security_policy(g.get("csp_nonce"), origins)
        return response

    # ---- admins: add, edit, pause, resume, remove ------------------------------------------------------

    @expose("/new", methods=("GET", "POST"))
    def new(self) -> BaseResponse | str:
        self._require_admin()
        fields = MailboxFields(name="", host="", username="")
        if request.method == "POST":
            try:
                fields = self._fields_from_form()
            except FormError as exc:
                flash(f"Mailbox not added: {exc}", "error")
                return self._form(fields, editing=False)
            created = commit(
                lambda s: create_mailbox(
                    s, fields, password=request.form.get("password") or None, box=_box(),
                    providers=settings().oauth, config_names=[m.name for m in settings().mailboxes],
                    now=now(),
                ),
                failure="Mailbox not added: ",
            )  # fmt: skip
            if created is not None:
                flash(f"Mailbox {fields.name} added. Its sync starts within a minute.", "success")
                return redirect(url_for(".index"))
        return self._form(fields, editing=False)

    @expose("/<mailbox_name>/edit", methods=("GET", "POST"))
    def edit(self, mailbox_name: str) -> BaseResponse | str:
        name = mailbox_name
        self._require_admin()
        mailbox = self._stored(name)
        fields = mailbox_fields(mailbox)
        if request.method == "POST":
            try:
                fields = self._fields_from_form(name=mailbox.name)
            except FormError as exc:
                flash(f"Mailbox not changed: {exc}", "error")
                return self._form(fields, editing=True, has_password=mailbox.password_encrypted is not None)
            changed = commit(
                lambda s: update_mailbox(
                    s, mailbox.name, fields, password=request.form.get("password") or None, box=_box(),
                    providers=settings().oauth, now=now(),
                ),
                failure="Mailbox not changed: ",
            )  # fmt: skip
            if changed is not None:
                flash(f"Mailbox {name} saved.", "success")
                return redirect(url_for(".index"))
        return self._form(fields, editing=True, has_password=mailbox.password_encrypted is not None)

    @expose("/<mailbox_name>/pause", methods=("POST",))
    def pause(self, mailbox_name: str) -> BaseResponse:
        name = mailbox_name
        self._require_admin()
        if commit(lambda s: pause_mailbox(s, self._stored(name).name, now=now())) is not None:
            flash(f"Mailbox {name} paused: nothing is synced until it is resumed.", "success")
        return redirect(url_for(".index"))

    @expose("/<mailbox_name>/resume", methods=("POST",))
    def resume(self, mailbox_name: str) -> BaseResponse:
        name = mailbox_name
        self._require_admin()
        if commit(lambda s: resume_mailbox(s, self._stored(name).name, now=now())) is not None:
            flash(f"Mailbox {name} resumed.", "success")
        return redirect(url_for(".index"))

    @expose("/<mailbox_name>/remove", methods=("POST",))
    def remove(self, mailbox_name: str) -> BaseResponse:
        name = mailbox_name
        self._require_admin()
        mailbox = self._stored(name)
        commit(lambda s: remove_mailbox(s, mailbox.name, box=_box(), now=now()))
        flash(f"Mailbox {name} removed. The mail it logged stays on the timelines.", "success")
        return redirect(url_for(".index"))

    # ---- connecting through OAuth ----------------------------------------------------------------------

    @expose("/<mailbox_name>/connect", methods=("POST",))
    def connect(self, mailbox_name: str) -> BaseResponse:
        name = mailbox_name
        mailbox = self._effective(name)
        if not self._may_connect(mailbox):
            abort(403)
        if connector() is None:
            flash(f"Connect it from the server: threadline mailbox connect {name}", "error")
            return redirect(url_for(".index"))
        chosen = request.form.get("sharing", "")
        shareable = chosen in (Sharing.SHARED.value, Sharing.PRIVATE.value) and not self._read_only(name)
        if shareable and commit(lambda s: set_sharing(s, name, Sharing(chosen), now=now())) is None:
            return redirect(url_for(".index"))
        return self._to_consent(mailbox, {"mailbox": mailbox.name}, failure=f"Cannot connect {name}: ")

    @expose("/connect-own", methods=("POST",))
    def connect_own(self) -> BaseResponse:
        """Connect my mailbox: a person's own new mailbox, added once the provider sends them back with
        their consent (a refused or abandoned consent adds nothing)."""
        if connector() is None:
            flash("Ask an admin to add your mailbox: this panel cannot reach the providers.", "error")
            return redirect(url_for(".index"))
        try:
            fields = self._own_fields(request.form)
        except DomainError as exc:
            flash(f"Mailbox not connected: {exc}", "error")
            return redirect(url_for(".index"))
        candidate = _as_candidate(fields)
        new = {"provider": fields.provider or "", "address": fields.username, "sharing": fields.sharing.value}
        return self._to_consent(candidate, {"new": new}, failure="Mailbox not connected: ")

    @expose("/callback")
    def callback(self) -> BaseResponse:
        pending = session.pop(PENDING, None)
        flows = connector()
        if not isinstance(pending, dict) or flows is None:
            flash("This sign-in was not started here, or it was already used: click Connect again.", "error")
            return redirect(url_for(".index"))
        new = pending.get("new")
        if isinstance(new, dict):
            return self._finish_own(new, pending)
        mailbox = self._effective(str(pending.get("mailbox")))
        if not self._may_connect(mailbox):
            abort(403)
        try:
            flows.finish(mailbox, pending, request.url)
        except DomainError as exc:
            flash(f"Mailbox {mailbox.name} not connected: {exc}", "error")
            return redirect(url_for(".index"))
        flash(f"Mailbox {mailbox.name} connected. Its mail appears within a minute.", "success")
        return redirect(url_for(".index"))

    def _finish_own(self, new: dict[str, str], pending: dict[str, str]) -> BaseResponse:
        """The consent for a person's own new mailbox came back: its grant is stored, then the mailbox is
        added, owned by whoever is logged in now. A refused consent adds nothing."""
        flows = connector()
        assert flows is not None
        try:
            fields = self._own_fields(new)
        except DomainError as exc:
            flash(f"Mailbox not connected: {exc}", "error")
            return redirect(url_for(".index"))
        candidate = _as_candidate(fields)
        db().rollback()  # end the read: the grant is written from another session (SQLite: one writer)
        try:
            flows.finish(candidate, pending, request.url)  # a refused consent stops here: nothing is added
        except DomainError as exc:
            flash(f"Mailbox {fields.username} not connected, nothing was added: {exc}", "error")
            return redirect(url_for(".index"))
        config_names = [m.name for m in settings().mailboxes]
        added = commit(
            lambda s: create_mailbox(
                s, fields, box=_box(), providers=settings().oauth, config_names=config_names, now=now()
            ),
            failure="Mailbox not connected: ",
        )
        if added is None:
            commit(lambda s: delete_grant(s, fields.name, box=_box()))
            return redirect(url_for(".index"))
        flash(f"Mailbox {fields.name} connected. Its mail appears within a minute.", "success")
        return redirect(url_for(".index"))

    @staticmethod
    def _own_fields(form: Mapping[str, str]) -> MailboxFields:
        try:
            sharing = Sharing(form.get("sharing") or Sharing.SHARED.value)
        except ValueError:
            abort(400)
        return own_mailbox_fields(
            db(), permissions.user(), form.get("address", ""), provider=form.get("provider", ""),
            sharing=sharing, providers=settings().oauth, config_names=[m.name for m in settings().mailboxes],
        )  # fmt: skip

    @staticmethod
    def _to_consent(mailbox: MailboxSettings, keep: dict[str, object], *, failure: str) -> BaseResponse:
        """Send the browser to the provider's consent page; what the callback needs waits in the session."""
        flows = connector()
        assert flows is not None
        try:
            pending = flows.begin(mailbox, url_for(".callback", _external=True))
        except DomainError as exc:
            flash(f"{failure}{exc}", "error")
            return redirect(url_for(".index"))
        session[PENDING] = {**pending, **keep}
        return redirect(pending["url"])

    # ---- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _may_connect(mailbox: MailboxSettings | MailboxOverview) -> bool:
        """Admins connect any OAuth mailbox; a person connects the mailboxes they own."""
        settings_ = mailbox.settings if isinstance(mailbox, MailboxOverview) else mailbox
        if settings_.auth is not MailboxAuth.OAUTH:
            return False
        return permissions.is_admin() or settings_.owner == permissions.user().email

    @staticmethod
    def _read_only(name: str) -> bool:
        return name in {m.name for m in settings().mailboxes}

    @staticmethod
    def _require_admin() -> None:
        if not permissions.is_admin():
            abort(403)

    @staticmethod
    def _stored(name: str) -> Mailbox:
        mailbox = db().scalar(select(Mailbox).where(Mailbox.name == name, Mailbox.removed_at.is_(None)))
        if mailbox is None or name in {m.name for m in settings().mailboxes}:
            abort(404)  # config-file mailboxes are changed in the file only
        return mailbox

    @staticmethod
    def _effective(name: str) -> MailboxSettings:
        for item in mailbox_overview(db(), settings().mailboxes, box=_box()):
            if item.name == name:
                return item.settings
        abort(404)

    @staticmethod
    def _fields_from_form(name: str | None = None) -> MailboxFields:
        form = request.form

        def number(key: str, default: int) -> int:
            value = form.get(key, "").strip()
            if not value:
                return default
            if not value.isdigit() or len(value) > 9:
                raise FormError(f"{key.replace('_', ' ')}: must be a whole number")
            return int(value)

        try:
            auth = MailboxAuth(form.get("auth", MailboxAuth.PASSWORD.value))
            sharing = Sharing(form.get("sharing", Sharing.SHARED.value))
        except ValueError:
            abort(400)
        return MailboxFields(
            name=name if name is not None else form.get("name", "").strip(),
            host=form.get("host", "").strip(),
            username=form.get("username", "").strip(),
            port=number("port", 993),
            security=form.get("security", "ssl"),
            auth=auth,
            provider=form.get("provider") or None,
            folders=tuple(f.strip() for f in form.get("folders", "").split(",") if f.strip()),
            owner=form.get("owner") or None,
            address=form.get("address", "").strip() or None,
            poll_seconds=number("poll_seconds", 60),
            idle=form.get("idle") == "on",
            sharing=sharing,
        )

    def _form(self, fields: MailboxFields, *, editing: bool, has_password: bool = False) -> str:
        users = db().scalars(select(User).where(User.active.is_(True)).order_by(User.name)).all()
        return self.page(
            "threadline/mailbox_form.html",
            fields=fields,
            editing=editing,
            has_password=has_password,
            users=users,
            providers=sorted(settings().oauth),
            security_choices=SECURITY_CHOICES,
            auth_labels=AUTH_LABELS,
            Sharing=Sharing,
        )


def _as_candidate(fields: MailboxFields) -> MailboxSettings:
    """A person's own mailbox before it is added: what the connector needs to run its consent flow."""
    return MailboxSettings(
        name=fields.name, host=fields.host, username=fields.username, auth=fields.auth,
        provider=fields.provider, owner=fields.owner, address=fields.address, source=MailboxSource.DATABASE,
    )  # fmt: skip


class FormError(DomainError):
    """A field of the mailbox form cannot be read."""

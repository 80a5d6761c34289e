"""The mailbox sync status page (admins).

It shows what the daemon recorded per mailbox and folder, the quarantine (raw messages are offered
only as a download, never rendered) and the emails waiting for someone to choose their deal. Mailbox
passwords and other settings are never shown: only the rows the daemon wrote are read here.
"""

from __future__ import annotations

import io

from flask import abort, send_file
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db
from admin.formatting import fmt_datetime
from admin.views.base import AdminOnlyView, expose
from models.schema import (
    Activity,
    ActivityKind,
    FolderSyncState,
    GrantState,
    MailboxStatus,
    OAuthGrant,
    QuarantinedMessage,
)

LIST_LIMIT = 200


class SyncStatusView(AdminOnlyView):
    @expose("/")
    def index(self) -> str:
        session = db()
        mailboxes = session.scalars(select(MailboxStatus).order_by(MailboxStatus.mailbox)).all()
        reconnect = {
            g.mailbox: g
            for g in session.scalars(
                select(OAuthGrant).where(OAuthGrant.state == GrantState.RECONNECT_NEEDED)
            )
        }
        folders = session.scalars(
            select(FolderSyncState).order_by(FolderSyncState.mailbox, FolderSyncState.folder)
        ).all()
        quarantine = session.execute(
            select(
                QuarantinedMessage.id,
                QuarantinedMessage.mailbox,
                QuarantinedMessage.folder,
                QuarantinedMessage.uid,
                QuarantinedMessage.message_id,
                QuarantinedMessage.reason,
                QuarantinedMessage.attempts,
                QuarantinedMessage.last_attempt_at,
                func.length(QuarantinedMessage.raw),
            )
            .where(QuarantinedMessage.resolved_at.is_(None))
            .order_by(QuarantinedMessage.last_attempt_at.desc())
            .limit(LIST_LIMIT)
        ).all()
        review = session.scalars(
            select(Activity)
            .where(Activity.needs_deal_review.is_(True), Activity.kind == ActivityKind.EMAIL)
            .options(joinedload(Activity.company))
            .order_by(Activity.occurred_at.desc())
            .limit(LIST_LIMIT)
        ).all()
        review_count = session.scalar(
            select(func.count(Activity.id)).where(Activity.needs_deal_review.is_(True))
        )
        return self.page(
            "threadline/sync_status.html",
            mailboxes=mailboxes,
            reconnect=reconnect,
            folders=folders,
            quarantine=quarantine,
            review=review,
            review_count=review_count,
            fmt_datetime=fmt_datetime,
        )

    @expose("/quarantine/<int:message_id>.eml")
    def raw(self, message_id: int) -> BaseResponse:
        row = db().get(QuarantinedMessage, message_id)
        if row is None:
            abort(404)
        if not permissions.bodies().can_read_mailbox(row.mailbox):
            abort(403)  # the raw message of a private mailbox: its owner's only
        response = send_file(
            io.BytesIO(row.raw),
            mimetype="application/octet-stream",
            as_attachment=True,
            download_name=f"quarantine-{row.id}.eml",
        )
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

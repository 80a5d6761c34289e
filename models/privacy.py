"""Who may read the whole of an email: the one owner of the private-or-shared rule.

A mailbox is `shared` (everyone sees the whole message, the default) or `private` (models.schema.Mailbox
.sharing, or `sharing` in a [[mailboxes]] block). Of an email seen only in private mailboxes, everyone sees
that it happened (date, participants, subject, the records it is filed on), but only the owner of one of
those mailboxes, and admins when [admin] admins_read_private is on, sees the rest: the body, the snippet
(a piece of the body), the HTML, the attachments and the raw message.

An email also seen in a shared mailbox is shared: someone chose to share that copy. Every page, download,
export, search and API asks this module, either per email (`BodyAccess.can_read`) or as a query filter
(`BodyAccess.readable()`, for searches over body text and listings that show snippets), built once per
request with `body_access(session, viewer, policy)`.

A mailbox removed in the panel keeps its row (models.mailboxes.remove_mailbox marks it removed), so its mail
stays private. A name no mailbox has (a [[mailboxes]] block renamed or deleted from the file) is shared, as
all mail was before mailboxes could be private.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, not_, or_, select, true
from sqlalchemy.orm import Session

from models.schema import Activity, ActivityKind, EmailSighting, Mailbox, Role, User
from settings.model import MailboxSettings, Sharing

__all__ = ["BodyAccess", "PrivacyPolicy", "body_access", "can_read_body", "private_mailbox_owners"]


@dataclass(frozen=True)
class PrivacyPolicy:
    """What the rule needs from the settings: the config file's mailboxes (their sharing and owner) and
    whether admins read private mail."""

    config_mailboxes: Sequence[MailboxSettings] = ()
    admins_read_private: bool = False


def private_mailbox_owners(session: Session, policy: PrivacyPolicy) -> dict[str, int | None]:
    """Every private mailbox by name, with its owner's user id (None: no owner, only admins may read)."""
    owners: dict[str, int | None] = {}
    config_owners = {m.owner for m in policy.config_mailboxes if m.sharing is Sharing.PRIVATE and m.owner}
    ids = (
        {e: i for e, i in session.execute(select(User.email, User.id).where(User.email.in_(config_owners)))}
        if config_owners
        else {}
    )
    config_names = {m.name for m in policy.config_mailboxes}
    for name, owner_id in session.execute(
        select(Mailbox.name, Mailbox.owner_id).where(Mailbox.sharing == Sharing.PRIVATE)
    ):
        if name not in config_names:  # the file's definition wins (as in effective_mailboxes)
            owners[name] = owner_id
    for mailbox in policy.config_mailboxes:
        if mailbox.sharing is Sharing.PRIVATE:
            owners[mailbox.name] = ids.get(mailbox.owner or "")
    return owners


@dataclass(frozen=True)
class BodyAccess:
    """One viewer's access to email bodies: the private mailboxes whose mail they may not read in full."""

    hidden: frozenset[str]

    @property
    def sees_everything(self) -> bool:
        return not self.hidden

    def can_read_mailboxes(self, mailboxes: Iterable[str]) -> bool:
        """May the viewer read an email seen in these mailboxes? (No mailbox: not synced mail, readable.)"""
        names = list(mailboxes)
        return not names or any(name not in self.hidden for name in names)

    def can_read(self, email: Activity) -> bool:
        """May the viewer read this activity's body, snippet, HTML, attachments and raw message?"""
        if email.kind is not ActivityKind.EMAIL or not self.hidden:
            return True
        return self.can_read_mailboxes(s.mailbox for s in email.sightings)

    def can_read_mailbox(self, mailbox: str) -> bool:
        """May the viewer read what only this mailbox holds (its quarantined raw messages, say)?"""
        return mailbox not in self.hidden

    def readable(self) -> ColumnElement[bool]:
        """A filter on Activity: the rows whose body the viewer may read (for searches over bodies and for
        listings that show snippets)."""
        if not self.hidden:
            return true()
        seen = EmailSighting.activity_id == Activity.id
        return or_(
            Activity.kind != ActivityKind.EMAIL,
            not_(exists().where(seen)),
            exists().where(seen, EmailSighting.mailbox.not_in(sorted(self.hidden))),
        )


def body_access(session: Session, viewer: User | None, policy: PrivacyPolicy) -> BodyAccess:
    """The viewer's access, built once (per request, per export). No viewer: no private mail at all."""
    owners = private_mailbox_owners(session, policy)
    if viewer is not None and viewer.role is Role.ADMIN and policy.admins_read_private:
        return BodyAccess(frozenset())
    viewer_id = viewer.id if viewer is not None else None
    return BodyAccess(
        frozenset(name for name, owner in owners.items() if owner is None or owner != viewer_id)
    )


def can_read_body(session: Session, viewer: User | None, email: Activity, policy: PrivacyPolicy) -> bool:
    """May this user read the email's body, HTML, attachments and raw message? (One email; for many, build
    `body_access` once.)"""
    return body_access(session, viewer, policy).can_read(email)

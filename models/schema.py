"""The CRM's tables: SQLAlchemy 2.x typed models and the indexes their queries need.

Only structure lives here; operations with side effects (moving a deal, logging an email) live in the
domain modules beside this one so the daemon, the admin panel and the CLI all go through the same code.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from models.messages import Direction as Direction  # re-exported: the activities.direction column
from models.types import Money, UTCDateTime
from settings.model import MailboxAuth, SaslMechanism, Sharing

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The wall clock, for the `updated_at` columns only (domain operations take `now` as a parameter)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), Decimal: Money(), dict[str, Any]: JSON()}


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Role(enum.StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    REP = "rep"


class StageKind(enum.StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class DealStatus(enum.StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class ActivityKind(enum.StrEnum):
    EMAIL = "email"
    CALL = "call"
    MEETING = "meeting"
    NOTE = "note"
    TASK = "task"
    MERGE = "merge"  # two records became one (models.merge): shown on the kept record's timeline


class PlannedKind(enum.StrEnum):
    """What a planned activity (a `Task` row) is: the rep's next step on a deal, contact or company."""

    CALL = "call"
    MEETING = "meeting"
    EMAIL = "email"
    TODO = "todo"


class GrantState(enum.StrEnum):
    ACTIVE = "active"
    RECONNECT_NEEDED = "reconnect_needed"  # the provider refused the grant: the owner must connect again


class GrantFlow(enum.StrEnum):
    """How a grant was obtained."""

    AUTHORIZATION_CODE = "browser"  # authorization code with PKCE (the panel, or the CLI's browser flow)
    DEVICE_CODE = "device"  # RFC 8628 device code (the CLI on a headless server)
    CLIENT_CREDENTIALS = "app"  # app-only access granted by a tenant admin


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_enum(Role), default=Role.REP)
    password_hash: Mapped[str] = mapped_column(String(255), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    alerts_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    # raised when the user logs out or gets a new password or role: every older login session ends
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def __repr__(self) -> str:
        return f"User({self.email!r}, {self.role.value})"

    def __str__(self) -> str:
        return self.name or self.email


class Company(Base):
    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    last_activity_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow, index=True)

    owner: Mapped[User | None] = relationship()
    domains: Mapped[list[CompanyDomain]] = relationship(
        back_populates="company", cascade="all, delete-orphan", order_by="CompanyDomain.id"
    )
    contacts: Mapped[list[Contact]] = relationship(back_populates="company")

    def __str__(self) -> str:
        return self.name


class CompanyDomain(Base):
    __tablename__ = "company_domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"), index=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)

    company: Mapped[Company] = relationship(back_populates="domains")

    def __str__(self) -> str:
        return self.domain


deal_contacts = Table(
    "deal_contacts",
    Base.metadata,
    Column("deal_id", ForeignKey("deals.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_deal_contacts_contact_id", "contact_id"),
)

activity_contacts = Table(
    "activity_contacts",
    Base.metadata,
    Column("activity_id", ForeignKey("activities.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_activity_contacts_contact_id", "contact_id", "activity_id"),
)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(64))
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    lead_source: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(index=True)
    last_activity_at: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow, index=True)

    company: Mapped[Company | None] = relationship(back_populates="contacts")
    owner: Mapped[User | None] = relationship()
    emails: Mapped[list[ContactEmail]] = relationship(
        back_populates="contact", cascade="all, delete-orphan", order_by="ContactEmail.id"
    )
    deals: Mapped[list[Deal]] = relationship(secondary=deal_contacts, back_populates="contacts")

    @property
    def primary_email(self) -> str | None:
        return self.emails[0].email if self.emails else None

    def __str__(self) -> str:
        return self.name or (self.primary_email or f"contact {self.id}")


class ContactEmail(Base):
    __tablename__ = "contact_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    bounced_at: Mapped[datetime | None]  # when mail to it last came back undelivered

    contact: Mapped[Contact] = relationship(back_populates="emails")

    def __str__(self) -> str:
        return self.email


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]

    stages: Mapped[list[Stage]] = relationship(
        back_populates="pipeline", order_by="Stage.position", cascade="all, delete-orphan"
    )

    def __str__(self) -> str:
        return self.name


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("pipeline_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=0)
    probability: Mapped[int] = mapped_column(Integer, default=0)
    stall_days: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[StageKind] = mapped_column(_enum(StageKind), default=StageKind.OPEN)
    alerts_excluded: Mapped[bool] = mapped_column(Boolean, default=False)

    pipeline: Mapped[Pipeline] = relationship(back_populates="stages")

    def __str__(self) -> str:
        return self.name


class Deal(Base):
    __tablename__ = "deals"
    __table_args__ = (
        Index("ix_deals_pipeline_stage_status", "pipeline_id", "stage_id", "status"),
        Index("ix_deals_status_last_activity_at", "status", "last_activity_at"),
        Index("ix_deals_status_expected_close_on", "status", "expected_close_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(300), index=True)
    value: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="RESTRICT"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id", ondelete="RESTRICT"), index=True)
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    expected_close_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[DealStatus] = mapped_column(_enum(DealStatus), default=DealStatus.OPEN)
    lost_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(index=True)
    stage_entered_at: Mapped[datetime]
    closed_at: Mapped[datetime | None] = mapped_column(index=True)
    last_activity_at: Mapped[datetime | None]
    alerts_muted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow, index=True)

    pipeline: Mapped[Pipeline] = relationship()
    stage: Mapped[Stage] = relationship()
    company: Mapped[Company | None] = relationship()
    owner: Mapped[User | None] = relationship()
    contacts: Mapped[list[Contact]] = relationship(secondary=deal_contacts, back_populates="deals")
    stage_changes: Mapped[list[DealStageChange]] = relationship(
        back_populates="deal", cascade="all, delete-orphan", order_by="DealStageChange.changed_at"
    )

    def __str__(self) -> str:
        return self.title


class DealStageChange(Base):
    __tablename__ = "deal_stage_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    from_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    to_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    changed_at: Mapped[datetime] = mapped_column(index=True)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    deal: Mapped[Deal] = relationship(back_populates="stage_changes")
    from_stage: Mapped[Stage | None] = relationship(foreign_keys=[from_stage_id])
    to_stage: Mapped[Stage | None] = relationship(foreign_keys=[to_stage_id])
    changed_by: Mapped[User | None] = relationship()


class Activity(Base):
    __tablename__ = "activities"
    __table_args__ = (
        Index("ix_activities_deal_id_occurred_at", "deal_id", "occurred_at"),
        Index("ix_activities_company_id_occurred_at", "company_id", "occurred_at"),
        Index("ix_activities_author_id_occurred_at", "author_id", "occurred_at"),
        # covers the dashboard's "activities per rep over 30 days": an index-only range per author and kind
        Index("ix_activities_author_id_kind_occurred_at", "author_id", "kind", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[ActivityKind] = mapped_column(_enum(ActivityKind))
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    subject: Mapped[str] = mapped_column(String(998), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]

    # email only
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    content_key: Mapped[str | None] = mapped_column(String(1000), unique=True)
    thread_key: Mapped[str | None] = mapped_column(String(1000), index=True)
    direction: Mapped[Direction | None] = mapped_column(_enum(Direction))
    from_address: Mapped[str | None] = mapped_column(String(998))
    to_addresses: Mapped[list[str] | None] = mapped_column(JSON)
    cc_addresses: Mapped[list[str] | None] = mapped_column(JSON)
    body_html: Mapped[str | None] = mapped_column(Text)
    snippet: Mapped[str] = mapped_column(String(400), default="")
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_deal_review: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    bounce: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # a DSN

    author: Mapped[User | None] = relationship()
    company: Mapped[Company | None] = relationship()
    deal: Mapped[Deal | None] = relationship()
    contacts: Mapped[list[Contact]] = relationship(secondary=activity_contacts)
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="activity", cascade="all, delete-orphan", order_by="Attachment.id"
    )
    sightings: Mapped[list[EmailSighting]] = relationship(
        back_populates="activity", cascade="all, delete-orphan", order_by="EmailSighting.id"
    )

    @property
    def mailboxes(self) -> list[str]:
        return sorted({s.mailbox for s in self.sightings})


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes | None] = mapped_column(LargeBinary)

    activity: Mapped[Activity] = relationship(back_populates="attachments")


class EmailSighting(Base):
    """One mailbox/folder an email activity was seen in (the same email seen by two reps is one activity)."""

    __tablename__ = "email_sightings"
    __table_args__ = (UniqueConstraint("activity_id", "mailbox", "folder"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    mailbox: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(500))
    seen_at: Mapped[datetime]

    activity: Mapped[Activity] = relationship(back_populates="sightings")


class Task(Base):
    """A planned activity: a call, meeting, email or to-do, with a due date (optional time) and an assignee.

    `due_at` is the moment it becomes overdue: the planned time, or the end of the due day in the team's time
    zone when no time was given (`has_due_time` false), so the overdue rule stays `due_at < now`.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_done_at_due_at", "done_at", "due_at"),
        # my day: one assignee's open activities by due time
        Index("ix_tasks_assignee_id_done_at_due_at", "assignee_id", "done_at", "due_at"),
        # a deal's next activity (the board's cards, the deal page, deals without a next step)
        Index("ix_tasks_deal_id_done_at_due_at", "deal_id", "done_at", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[PlannedKind] = mapped_column(
        _enum(PlannedKind), default=PlannedKind.TODO, server_default=PlannedKind.TODO.value
    )
    title: Mapped[str] = mapped_column(String(500))
    notes: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime | None] = mapped_column(index=True)  # the planned list, earliest first
    has_due_time: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    done_at: Mapped[datetime | None]
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow, index=True)

    assignee: Mapped[User | None] = relationship()
    deal: Mapped[Deal | None] = relationship()
    contact: Mapped[Contact | None] = relationship()
    company: Mapped[Company | None] = relationship()

    def __str__(self) -> str:
        return self.title


class Mailbox(Base):
    """A mailbox managed in the database (added in the panel); [[mailboxes]] in the TOML are not stored here.

    Its password, if it has one, is stored encrypted only (models.secrets): `password_encrypted` holds a
    Fernet token, never the password.
    """

    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    security: Mapped[str] = mapped_column(String(16), default="ssl")
    username: Mapped[str] = mapped_column(String(320))
    auth: Mapped[MailboxAuth] = mapped_column(_enum(MailboxAuth), default=MailboxAuth.PASSWORD)
    provider: Mapped[str | None] = mapped_column(String(100))
    sasl: Mapped[SaslMechanism | None] = mapped_column(_enum(SaslMechanism))
    password_encrypted: Mapped[str | None] = mapped_column(Text)
    folders: Mapped[list[str]] = mapped_column(JSON, default=list)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    address: Mapped[str | None] = mapped_column(String(320))
    poll_seconds: Mapped[int] = mapped_column(Integer, default=60)
    idle: Mapped[bool] = mapped_column(Boolean, default=True)
    tls_ca_file: Mapped[str | None] = mapped_column(String(1000))
    timeout_seconds: Mapped[float] = mapped_column(Float, default=30.0)
    sharing: Mapped[Sharing] = mapped_column(_enum(Sharing), default=Sharing.SHARED)
    paused_at: Mapped[datetime | None]
    # removed in the panel: the row stays (unlisted, unsynced) so its logged mail keeps its owner and privacy
    removed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    owner: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"Mailbox({self.name!r}, {self.username}@{self.host}, {self.auth.value})"


class OAuthGrant(Base):
    """A mailbox's OAuth grant: the refresh token and the current access token, both encrypted.

    Keyed by mailbox name, so mailboxes from the TOML file have grants too. `state` says whether the grant
    still works; a refused refresh sets it to reconnect_needed with the reason and the time.
    """

    __tablename__ = "oauth_grants"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(100))
    flow: Mapped[GrantFlow] = mapped_column(_enum(GrantFlow))
    scopes: Mapped[str] = mapped_column(Text, default="")
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_token_expires_at: Mapped[datetime | None]
    state: Mapped[GrantState] = mapped_column(_enum(GrantState), default=GrantState.ACTIVE)
    reconnect_reason: Mapped[str | None] = mapped_column(Text)
    reconnect_needed_at: Mapped[datetime | None]
    granted_at: Mapped[datetime]
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    refreshed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    granted_by: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"OAuthGrant({self.mailbox!r}, {self.provider}, {self.state.value})"


class MailboxStatus(Base):
    """Per mailbox: its health as the daemon last saw it (backoff state lives here too)."""

    __tablename__ = "mailbox_status"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(200), unique=True)
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    # the daemon (daemons.id) whose IDLE on this mailbox is connected now, and since when (models.leases)
    idle_daemon_id: Mapped[int | None] = mapped_column(Integer)
    idle_since: Mapped[datetime | None]
    # the daemon's last pass that fetched mail: how long it took and how many messages it fetched
    last_pass_seconds: Mapped[float | None] = mapped_column(Float)
    last_pass_messages: Mapped[int | None] = mapped_column(Integer)


class FolderSyncState(Base):
    """Per mailbox and folder: the sync cursor, committed with each batch."""

    __tablename__ = "folder_sync_state"
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    highestmodseq: Mapped[int | None] = mapped_column(BigInteger)
    uidnext: Mapped[int | None] = mapped_column(BigInteger)
    messages_seen: Mapped[int] = mapped_column(BigInteger, default=0)
    messages_logged: Mapped[int] = mapped_column(BigInteger, default=0)
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    # UIDs above the cursor at the last poll that committed (0 once all are handled; NULL before any poll)
    messages_waiting: Mapped[int | None] = mapped_column(BigInteger)


class SeenMessage(Base):
    """Every message the sync has decided about, so a repeated fetch inserts nothing twice."""

    __tablename__ = "seen_messages"
    __table_args__ = (
        UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),
        Index("ix_seen_messages_content_key", "content_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    content_key: Mapped[str | None] = mapped_column(String(1000))
    outcome: Mapped[str] = mapped_column(String(16))
    activity_id: Mapped[int | None] = mapped_column(ForeignKey("activities.id", ondelete="SET NULL"))
    seen_at: Mapped[datetime]


class QuarantinedMessage(Base):
    """A message that could not be processed: raw bytes kept, reason recorded, retried on later runs."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(200))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(998))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None] = mapped_column(index=True)


class Notification(Base):
    """An alert decided for a user; its key makes deciding it twice impossible."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_id_read_at", "user_id", "read_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    read_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()
    deal: Mapped[Deal | None] = relationship()
    task: Mapped[Task | None] = relationship()
    contact: Mapped[Contact | None] = relationship()


class DaemonProcess(Base):
    """One `threadline daemon` process as it last reported itself (models.leases): its heartbeat, and on
    PostgreSQL the backend of the connection holding its leases (how a mailbox's holder is found)."""

    __tablename__ = "daemons"

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    backend_pid: Mapped[int | None] = mapped_column(Integer)
    mailboxes_held: Mapped[int] = mapped_column(Integer, default=0)
    jobs_held: Mapped[str] = mapped_column(String(500), default="")


class MergedRecord(Base):
    """A contact or company merged into another (models.merge): its old id leads to the one kept."""

    __tablename__ = "merged_records"
    __table_args__ = (
        UniqueConstraint("kind", "merged_id"),
        Index("ix_merged_records_kind_kept_id", "kind", "kept_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    merged_id: Mapped[int] = mapped_column(Integer)
    kept_id: Mapped[int] = mapped_column(Integer)
    merged_name: Mapped[str] = mapped_column(String(300), default="")
    merged_at: Mapped[datetime]
    merged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class SalesTarget(Base):
    """A rep's target (quota) of won value for one period (a month, a quarter or a year), set by an admin.

    The period is [starts_on, ends_on): ends_on is the first day after it. models.reports owns what a target
    means on the dashboard (a period without its own target adds up the targets inside it).
    """

    __tablename__ = "sales_targets"
    __table_args__ = (UniqueConstraint("user_id", "starts_on", "ends_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    amount: Mapped[Decimal]
    currency: Mapped[str] = mapped_column(String(3))
    set_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime]

    user: Mapped[User] = relationship(foreign_keys=[user_id])


class ApiKey(Base):
    """A key for the REST API: it acts as its user, with that user's role. Only a SHA-256 of the token is
    stored (models.apikeys says why that is enough); `prefix` is the token's first characters, shown in lists
    so a person can tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    def __repr__(self) -> str:
        return f"ApiKey({self.name!r}, {self.prefix}...)"


class IdempotentRequest(Base):
    """The answer given to a POST that carried an Idempotency-Key, replayed when the same key comes again."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(index=True)


# ---- the index of skipped mail (models.history) ------------------------------------------------------------


class HistoryAddress(Base):
    """An outside address seen on skipped mail, stored once however many messages it appears on."""

    __tablename__ = "history_addresses"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)


class HistoryMessage(Base):
    """A message the sync skipped, kept for `[matching] history_days` so that it can be fetched again (by
    UID) and logged when one of its addresses becomes a contact's. No body, no subject."""

    __tablename__ = "history_messages"
    __table_args__ = (UniqueConstraint("folder_id", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folder_sync_state.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    content_key: Mapped[str | None] = mapped_column(String(1000))
    sent_at: Mapped[datetime] = mapped_column(index=True)
    gone: Mapped[bool] = mapped_column(Boolean, default=False)  # the server no longer has it


history_participants = Table(
    "history_participants",
    Base.metadata,
    Column("address_id", ForeignKey("history_addresses.id", ondelete="CASCADE"), primary_key=True),
    Column("message_id", ForeignKey("history_messages.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_history_participants_message_id", "message_id"),
)


class RelinkRequest(Base):
    """An address a contact gained or a domain a company gained: its skipped mail is to be looked at again.
    Written by models.contacts in the transaction that adds the address or domain; done by the daemon's
    relink job or the next `threadline sync --once` (daemon.relink)."""

    __tablename__ = "relink_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str | None] = mapped_column(String(320))
    domain: Mapped[str | None] = mapped_column(String(253))
    requested_at: Mapped[datetime]


class WebhookSubscription(Base):
    """A receiver of events (REST-hook style: made in the panel or with POST /api/v1/webhooks). Its signing
    secret is stored encrypted (models.secrets); a subscription whose deliveries failed for the whole retry
    period is paused, with the reason, until someone resumes it."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    target_url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    paused_at: Mapped[datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(Text)

    created_by: Mapped[User | None] = relationship()


class WebhookEvent(Base):
    """The outbox: an event written in the same transaction as the change it tells of. `event_id` is what
    receivers dedupe on; `dedupe_key` makes an event that is decided by a scan (task.due) happen once."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(index=True)


class WebhookDelivery(Base):
    """One event for one subscription: pending until delivered (at least once), retried with backoff."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "subscription_id"),
        Index("ix_webhook_deliveries_delivered_at_next_attempt_at", "delivered_at", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]

    event: Mapped[WebhookEvent] = relationship()
    subscription: Mapped[WebhookSubscription] = relationship()

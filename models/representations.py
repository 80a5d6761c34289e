"""How the CRM's records look from outside: the one shape of a contact, company, deal, activity, task,
pipeline and user that the REST API returns and that webhook events carry (marshmallow schemas, so the API's
OpenAPI document is generated from the same definitions that produce the JSON).

An email's text is shown only to a reader that models.privacy lets read it: the API marks each email it
may show in full (`show_email_body`); everything else (a webhook event, an email from a private mailbox the
reader does not own) carries the metadata everyone sees (time, direction, participants, subject, where it is
filed) and a null body. HTML and attachments stay in the panel.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields

from models.schema import Activity, ActivityKind, Contact, PlannedKind, Role, Task

BODY_SHOWN = "_representation_shows_body"


def show_email_body(activity: Activity) -> None:
    """Mark an email whose text this reader may see (models.privacy decided): dumps then include its body."""
    setattr(activity, BODY_SHOWN, True)


class _Out(ma.Schema):
    class Meta:
        ordered = True


class UserOut(_Out):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.Enum(Role, by_value=True, required=True)
    active = fields.Boolean(required=True)


class CompanyOut(_Out):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    domains = fields.Method("_domains", metadata={"type": "array", "items": {"type": "string"}})
    owner_id = fields.Integer(allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(allow_none=True)
    last_activity_at = fields.AwareDateTime(allow_none=True)

    def _domains(self, company: Any) -> list[str]:
        return [d.domain for d in company.domains]


class ContactOut(_Out):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    email = fields.Method("_email", metadata={"type": ["string", "null"], "description": "primary address"})
    emails = fields.Method("_emails", metadata={"type": "array", "items": {"type": "string"}})
    title = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    company_id = fields.Integer(allow_none=True)
    owner_id = fields.Integer(allow_none=True)
    lead_source = fields.String(allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(allow_none=True)
    last_activity_at = fields.AwareDateTime(allow_none=True)

    def _email(self, contact: Contact) -> str | None:
        return contact.primary_email

    def _emails(self, contact: Contact) -> list[str]:
        return [e.email for e in contact.emails]


class StageOut(_Out):
    id = fields.Integer(required=True)
    pipeline_id = fields.Integer(required=True)
    name = fields.String(required=True)
    position = fields.Integer(required=True)
    probability = fields.Integer(required=True)
    kind = fields.String(required=True, metadata={"enum": ["open", "won", "lost"]})


class PipelineOut(_Out):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    position = fields.Integer(required=True)
    stages = fields.List(fields.Nested(StageOut))


class DealOut(_Out):
    id = fields.Integer(required=True)
    title = fields.String(required=True)
    value = fields.Decimal(as_string=True, required=True, metadata={"description": "two decimals"})
    currency = fields.String(required=True)
    pipeline_id = fields.Integer(required=True)
    stage_id = fields.Integer(required=True)
    stage = fields.Function(lambda deal: deal.stage.name, metadata={"type": "string"})
    status = fields.String(required=True, metadata={"enum": ["open", "won", "lost"]})
    lost_reason = fields.String(allow_none=True)
    company_id = fields.Integer(allow_none=True)
    owner_id = fields.Integer(allow_none=True)
    contact_ids = fields.Function(
        lambda deal: [c.id for c in deal.contacts], metadata={"type": "array", "items": {"type": "integer"}}
    )
    expected_close_on = fields.Date(allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(allow_none=True)
    stage_entered_at = fields.AwareDateTime(required=True)
    closed_at = fields.AwareDateTime(allow_none=True)
    last_activity_at = fields.AwareDateTime(allow_none=True)


class ActivityOut(_Out):
    id = fields.Integer(required=True)
    kind = fields.String(required=True, metadata={"enum": [k.value for k in ActivityKind]})
    occurred_at = fields.AwareDateTime(required=True)
    subject = fields.String(required=True)
    body = fields.String(
        allow_none=True, metadata={"description": "null for an email whose text the key's user may not read"}
    )
    author_id = fields.Integer(allow_none=True)
    company_id = fields.Integer(allow_none=True)
    deal_id = fields.Integer(allow_none=True)
    contact_ids = fields.Function(
        lambda a: [c.id for c in a.contacts], metadata={"type": "array", "items": {"type": "integer"}}
    )
    direction = fields.String(allow_none=True, metadata={"description": "emails: in or out"})
    from_address = fields.String(allow_none=True)
    to_addresses = fields.List(fields.String(), allow_none=True)
    created_at = fields.AwareDateTime(required=True)

    @ma.post_dump(pass_original=True)
    def _email_text_if_readable(self, data: dict[str, Any], activity: Activity, **_: Any) -> dict[str, Any]:
        if activity.kind == ActivityKind.EMAIL:
            if not getattr(activity, BODY_SHOWN, False):
                data["body"] = None
        else:
            data["direction"] = None
        return data


class TaskOut(_Out):
    id = fields.Integer(required=True)
    kind = fields.Enum(PlannedKind, by_value=True, required=True)
    title = fields.String(required=True)
    notes = fields.String(required=True)
    due_at = fields.AwareDateTime(allow_none=True)
    has_due_time = fields.Boolean(required=True, metadata={"description": "false: due_at is the day's end"})
    done_at = fields.AwareDateTime(allow_none=True)
    status = fields.Method("_status", metadata={"type": "string", "enum": ["open", "done"]})
    assignee_id = fields.Integer(allow_none=True)
    deal_id = fields.Integer(allow_none=True)
    contact_id = fields.Integer(allow_none=True)
    company_id = fields.Integer(allow_none=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(allow_none=True)

    def _status(self, task: Task) -> str:
        return "done" if task.done_at is not None else "open"

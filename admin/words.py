"""People's words for the values the database keeps as codes: stage kinds, deal statuses, roles, activity
kinds, email directions, alert kinds. Templates call `label(value)`; list columns and filters use the same
table, so a page never shows `stalled_deal` or `open`.

Column names become labels the same way: `created_at` reads "Created", `last_activity_at` "Last activity".
"""

from __future__ import annotations

import enum
import re

from models.messages import Direction
from models.notifications import (
    KIND_OVERDUE_TASK,
    KIND_RECONNECT_NEEDED,
    KIND_STALLED_DEAL,
    KIND_WAITING_LEAD,
)
from models.schema import ActivityKind, DealStatus, Role, StageKind

WORDS: dict[object, str] = {
    StageKind.OPEN: "Open",
    StageKind.WON: "Won",
    StageKind.LOST: "Lost",
    DealStatus.OPEN: "Open",
    DealStatus.WON: "Won",
    DealStatus.LOST: "Lost",
    Role.ADMIN: "Admin",
    Role.MANAGER: "Manager",
    Role.REP: "Rep",
    ActivityKind.EMAIL: "Email",
    ActivityKind.CALL: "Call",
    ActivityKind.MEETING: "Meeting",
    ActivityKind.NOTE: "Note",
    ActivityKind.TASK: "Task done",
    Direction.IN: "Received",
    Direction.OUT: "Sent",
    KIND_STALLED_DEAL: "Stalled deal",
    KIND_OVERDUE_TASK: "Overdue activity",
    KIND_WAITING_LEAD: "Lead waiting for an answer",
    KIND_RECONNECT_NEEDED: "Mailbox needs reconnecting",
}


def label(value: object) -> str:
    """The word people use for a stored value; an unknown code is made readable ("some_code": "Some code")."""
    if value is None:
        return ""
    if value in WORDS:
        return WORDS[value]
    text = value.value if isinstance(value, enum.Enum) else value
    return humanize(str(text))


def humanize(name: str) -> str:
    """A column or code name as a label: "last_activity_at" -> "Last activity", "lead_source" -> "Lead
    source"."""
    words = re.sub(r"_(at|on|id)$", "", name).replace("_", " ").strip()
    return words[:1].upper() + words[1:]

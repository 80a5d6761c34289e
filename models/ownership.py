"""Who owns a sales record (contact, company, deal): handing records to another user in bulk."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import DomainError
from models.schema import Company, Contact, Deal, User

OwnedModel = type[Contact] | type[Company] | type[Deal]


def reassign_owner(session: Session, model: OwnedModel, ids: Sequence[int], owner: User) -> int:
    """Give the records of `model` with these ids to `owner` (an active user); returns how many changed."""
    if not owner.active:
        raise DomainError("choose an active user as the new owner")
    records: list[Contact | Company | Deal] = list(
        session.scalars(select(model).where(model.id.in_(list(ids))))
    )
    for record in records:
        record.owner = owner
    session.flush()
    return len(records)

"""/api/v1/contacts and /api/v1/companies: lists with filters, one record."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, fields, validate
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from admin.api.auth import require_write
from admin.api.lists import (
    ListArgs,
    owner_for_write,
    page_schema,
    paginate,
    record_or_404,
    resolve_user,
    since,
    words,
)
from admin.api.problems import ApiProblem
from admin.api.writes import IDEMPOTENCY_DOC, committed
from admin.context import db, now
from models.contacts import (
    create_company,
    find_contact_by_email,
    normalize_email,
    set_company_domains,
    set_contact_emails,
    upsert_contact,
)
from models.domains import normalize_domain
from models.representations import CompanyOut, ContactOut
from models.schema import Company, CompanyDomain, Contact, ContactEmail

contacts = Blueprint("contacts", __name__, url_prefix="/api/v1/contacts", description="People")
companies = Blueprint("companies", __name__, url_prefix="/api/v1/companies", description="Organisations")


class ContactArgs(ListArgs):
    email = fields.String(metadata={"description": "one of the contact's addresses"})
    domain = fields.String(
        metadata={"description": "an address domain, or a domain of the contact's company"}
    )
    company = fields.Integer(metadata={"description": "company id"})


class CompanyArgs(ListArgs):
    domain = fields.String()


class ContactIn(ma.Schema):
    """A contact to create or update; POST matches an existing contact by `email` and updates it."""

    class Meta:
        unknown = RAISE

    email = fields.Email(required=True, metadata={"description": "the address the contact is matched by"})
    name = fields.String(validate=validate.Length(max=300))
    title = fields.String(validate=validate.Length(max=200), allow_none=True)
    phone = fields.String(validate=validate.Length(max=64), allow_none=True)
    company_id = fields.Integer(allow_none=True)
    owner = fields.String(metadata={"description": "user id, email or `me` (default: the key's user)"})
    lead_source = fields.String(validate=validate.Length(max=100), allow_none=True)


class ContactPatch(ContactIn):
    email = fields.Email(metadata={"description": "replaces the contact's primary address"})


class CompanyIn(ma.Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    domains = fields.List(fields.String(), load_default=list)
    owner = fields.String(metadata={"description": "user id, email or `me` (default: the key's user)"})


class CompanyPatch(CompanyIn):
    name = fields.String(validate=validate.Length(min=1, max=300))
    domains = fields.List(fields.String())


def company_from_body(body: dict[str, Any]) -> Company | None:
    company_id = body.get("company_id")
    if company_id is None:
        return None
    company = db().get(Company, company_id)
    if company is None:
        raise ApiProblem(422, f"No company {company_id}.", field="company_id")
    return company


def text_or_blank(body: dict[str, Any], name: str) -> str | None:
    """A nullable text field: absent -> None (unchanged), null -> '' (cleared)."""
    if name not in body:
        return None
    return body[name] or ""


def get_contact(contact_id: int) -> Contact:
    return record_or_404(Contact, contact_id)


def get_company(company_id: int) -> Company:
    return record_or_404(Company, company_id)


@contacts.route("")
class Contacts(MethodView):
    @contacts.arguments(ContactArgs, location="query", unknown=RAISE)
    @contacts.response(200, page_schema(ContactOut))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List contacts, newest first"""
        query = select(Contact).options(selectinload(Contact.emails))
        if "email" in args:
            address = normalize_email(args["email"])
            if address is None:
                raise ApiProblem(422, "Not an email address.", field="email", where="query")
            query = query.where(
                Contact.id.in_(select(ContactEmail.contact_id).where(ContactEmail.email == address))
            )
        if "domain" in args:
            domain = normalize_domain(args["domain"])
            query = query.where(
                or_(
                    Contact.company_id.in_(
                        select(CompanyDomain.company_id).where(CompanyDomain.domain == domain)
                    ),
                    Contact.id.in_(
                        select(ContactEmail.contact_id).where(ContactEmail.email.endswith("@" + domain))
                    ),
                )
            )
        if "company" in args:
            query = query.where(Contact.company_id == args["company"])
        if "owner" in args:
            query = query.where(Contact.owner_id == resolve_user(args["owner"]).id)
        if "q" in args:
            query = query.where(
                or_(
                    words(Contact.name, q=args["q"]),
                    Contact.id.in_(
                        select(ContactEmail.contact_id).where(words(ContactEmail.email, q=args["q"]))
                    ),
                )
            )
        query = since(query, Contact.updated_at, args)
        return paginate(query, Contact.id, args)

    @committed
    @contacts.doc(**IDEMPOTENCY_DOC)
    @contacts.arguments(ContactIn)
    @contacts.response(201, ContactOut, description="created")
    @contacts.alt_response(200, schema=ContactOut, description="an existing contact with this email, updated")
    def post(self, body: dict[str, Any]) -> Any:
        """Create a contact, or update the one with this email (upsert)"""
        existing = find_contact_by_email(db(), body["email"])
        if existing is not None:
            require_write(existing)
        contact, created = upsert_contact(
            db(), email=body["email"], now=now(), name=body.get("name"), phone=text_or_blank(body, "phone"),
            title=text_or_blank(body, "title"), company=company_from_body(body),
            owner=owner_for_write(body.get("owner"), current=existing),
            lead_source=text_or_blank(body, "lead_source"),
        )  # fmt: skip
        location = {"Location": url_for("contacts.ContactById", contact_id=contact.id)}
        return (contact, 201, location) if created else (contact, 200)


@contacts.route("/<int:contact_id>")
class ContactById(MethodView):
    @contacts.response(200, ContactOut)
    def get(self, contact_id: int) -> Contact:
        """One contact"""
        return get_contact(contact_id)

    @committed
    @contacts.arguments(ContactPatch)
    @contacts.response(200, ContactOut)
    def patch(self, body: dict[str, Any], contact_id: int) -> Contact:
        """Change a contact (only the fields sent)"""
        contact = get_contact(contact_id)
        require_write(contact)
        if "email" in body:
            others = [e.email for e in contact.emails if e.email != body["email"].lower()]
            set_contact_emails(db(), contact, [body["email"], *others])
        for name in ("title", "phone", "lead_source"):
            if name in body:
                setattr(contact, name, (body[name] or "").strip() or None)
        if body.get("name", "").strip():
            contact.name = body["name"].strip()
        if "company_id" in body:
            contact.company = company_from_body(body)
        if "owner" in body:
            contact.owner = owner_for_write(body["owner"], current=contact)
        db().flush()
        return contact


@companies.route("")
class Companies(MethodView):
    @companies.arguments(CompanyArgs, location="query", unknown=RAISE)
    @companies.response(200, page_schema(CompanyOut))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List companies, newest first"""
        query = select(Company).options(selectinload(Company.domains))
        if "domain" in args:
            query = query.where(
                Company.id.in_(
                    select(CompanyDomain.company_id).where(
                        CompanyDomain.domain == normalize_domain(args["domain"])
                    )
                )
            )
        if "owner" in args:
            query = query.where(Company.owner_id == resolve_user(args["owner"]).id)
        if "q" in args:
            query = query.where(words(Company.name, q=args["q"]))
        query = since(query, Company.updated_at, args)
        return paginate(query, Company.id, args)

    @committed
    @companies.doc(**IDEMPOTENCY_DOC)
    @companies.arguments(CompanyIn)
    @companies.response(201, CompanyOut)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a company with its email domains"""
        company = create_company(
            db(),
            name=body["name"],
            now=now(),
            domains=body["domains"],
            owner=owner_for_write(body.get("owner")),
        )
        return company, 201, {"Location": url_for("companies.CompanyById", company_id=company.id)}


@companies.route("/<int:company_id>")
class CompanyById(MethodView):
    @companies.response(200, CompanyOut)
    def get(self, company_id: int) -> Company:
        """One company"""
        return get_company(company_id)

    @committed
    @companies.arguments(CompanyPatch)
    @companies.response(200, CompanyOut)
    def patch(self, body: dict[str, Any], company_id: int) -> Company:
        """Change a company (only the fields sent)"""
        company = get_company(company_id)
        require_write(company)
        if "name" in body:
            company.name = body["name"].strip()
        if "domains" in body:
            set_company_domains(db(), company, body["domains"])
        if "owner" in body:
            company.owner = owner_for_write(body["owner"], current=company)
        db().flush()
        return company

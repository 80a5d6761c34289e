"""/api/v1/contacts and /api/v1/companies: lists with filters, one record."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, fields
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from admin.api.lists import ListArgs, page_schema, paginate, record_or_404, resolve_user, since, words
from admin.api.problems import ApiProblem
from models.contacts import normalize_email
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


@contacts.route("/<int:contact_id>")
class ContactById(MethodView):
    @contacts.response(200, ContactOut)
    def get(self, contact_id: int) -> Contact:
        """One contact"""
        return get_contact(contact_id)


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


@companies.route("/<int:company_id>")
class CompanyById(MethodView):
    @companies.response(200, CompanyOut)
    def get(self, company_id: int) -> Company:
        """One company"""
        return get_company(company_id)

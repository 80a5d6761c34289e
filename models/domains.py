"""Company domains: the one rule for what an email domain says about a company.

A company owns domains (CompanyDomain). Three things are decided here and nowhere else:

- What a company domain is (`check_company_domain`): a syntactically valid DNS name (letters, digits and
  hyphens in labels of at most 63 characters, at least two labels, at most 253 characters; international
  names are accepted in Unicode or punycode and stored as given, lower case) that is not itself a public
  suffix: "co.uk" or "github.io" belong to no company. The import, the panel and the sync all use it.
- Which company an address belongs to (`company_domain_of`, `lookup_domains`): mail from
  someone@eu.mail.acme.co.uk belongs to the company owning eu.mail.acme.co.uk, else mail.acme.co.uk, else the
  registrable domain acme.co.uk (the most specific domain a company owns wins); a company made for a new
  contact gets the registrable domain, so a subsidiary's mail server names do not each become a company.
- The name a new company gets from its domain (`company_name_from_domain`): "acme-corp.co.uk" -> "Acme Corp".

The registrable domain comes from the Public Suffix List as shipped (offline) by the `publicsuffixlist`
package, which is released whenever the list changes; it is loaded on first use, not at import.
"""

from __future__ import annotations

import functools
import re

from publicsuffixlist import PublicSuffixList

from models.errors import DomainError

MAX_DOMAIN_LENGTH = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def normalize_domain(value: str) -> str:
    """Lower case, without a leading '@' or a trailing dot."""
    return value.strip().lower().lstrip("@").rstrip(".")


def is_domain_name(value: str) -> bool:
    """Whether a normalized value is a valid DNS name of two labels or more (Unicode labels allowed)."""
    if not value or len(value) > MAX_DOMAIN_LENGTH or "." not in value:
        return False
    try:
        ascii_name = value.encode("idna").decode("ascii") if not value.isascii() else value
    except UnicodeError:
        return False
    return len(ascii_name) <= MAX_DOMAIN_LENGTH and all(
        _LABEL.match(label) for label in ascii_name.split(".")
    )


def check_company_domain(value: str) -> str:
    """A domain a person gave for a company, normalized; DomainError saying what is wrong otherwise."""
    domain = normalize_domain(value)
    if not is_domain_name(domain):
        raise DomainError(f"{value.strip()!r} is not a domain name")
    if _suffixes().is_public(domain):
        raise DomainError(f"{domain} is a public suffix shared by many owners, not a company's domain")
    return domain


def company_domain_of(address_domain: str) -> str | None:
    """The registrable domain of an address's domain (acme.co.uk for eu.mail.acme.co.uk), or None when the
    domain is not a valid name or is a public suffix itself."""
    domain = normalize_domain(address_domain)
    if not is_domain_name(domain):
        return None
    registrable: str | None = _suffixes().privatesuffix(domain)
    return registrable


def lookup_domains(address_domain: str, company_domain: str) -> tuple[str, ...]:
    """The domains to look a company up by for an address, most specific first: the address's domain and its
    parents down to `company_domain` (its registrable domain)."""
    domain = normalize_domain(address_domain)
    if not domain.endswith("." + company_domain):
        return (company_domain,)
    labels = domain[: -len(company_domain) - 1].split(".")
    parents = (".".join([*labels[i:], company_domain]) for i in range(len(labels)))
    return (*parents, company_domain)


def company_name_from_domain(domain: str) -> str:
    """'acme-corp.co.uk' -> 'Acme Corp': a readable default staff can rename."""
    domain = normalize_domain(domain)
    registrable = company_domain_of(domain) or domain
    suffix = _suffixes().publicsuffix(registrable) or ""
    base = registrable[: -len(suffix) - 1] if suffix and registrable.endswith("." + suffix) else registrable
    base = base.split(".")[-1]
    return " ".join(part.capitalize() for part in re.split(r"[-_]", base) if part) or domain

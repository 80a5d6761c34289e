"""models.domains: the one rule for company domains, used by the import, the panel and the sync."""

from __future__ import annotations

import pytest

from models.domains import check_company_domain, company_domain_of, company_name_from_domain, lookup_domains
from models.errors import DomainError


def test_a_company_domain_is_a_valid_name_that_is_not_a_public_suffix() -> None:
    assert check_company_domain(" @Acme-Corp.CO.UK. ") == "acme-corp.co.uk"
    assert check_company_domain("bücher.de") == "bücher.de"
    for bad in ("acme", "not a domain", "pat@acme.com", "acme..com", "-acme.com", "acme.com/path", "x" * 300):
        with pytest.raises(DomainError, match="not a domain name"):
            check_company_domain(bad)
    for shared in ("co.uk", "github.io", "com.au"):
        with pytest.raises(DomainError, match="public suffix"):
            check_company_domain(shared)


def test_an_address_belongs_to_its_registrable_domain() -> None:
    assert company_domain_of("eu.mail.acme-corp.co.uk") == "acme-corp.co.uk"
    assert company_domain_of("pat.github.io") == "pat.github.io"
    assert company_domain_of("acme.example") == "acme.example"
    assert company_domain_of("co.uk") is None
    assert company_domain_of("[127.0.0.1]") is None


def test_companies_are_looked_up_from_the_most_specific_domain_down() -> None:
    assert lookup_domains("eu.mail.acme.co.uk", "acme.co.uk") == (
        "eu.mail.acme.co.uk",
        "mail.acme.co.uk",
        "acme.co.uk",
    )
    assert lookup_domains("acme.co.uk", "acme.co.uk") == ("acme.co.uk",)


def test_a_new_company_is_named_after_its_registrable_domain() -> None:
    assert company_name_from_domain("acme-corp.co.uk") == "Acme Corp"
    assert company_name_from_domain("eu.mail.initech.com") == "Initech"
    assert company_name_from_domain("pat.github.io") == "Pat"

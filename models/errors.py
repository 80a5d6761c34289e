"""Errors raised by domain operations; their messages are meant for the person who caused them."""


class DomainError(Exception):
    """A request the CRM cannot carry out as asked (unknown stage, duplicate email, ...)."""


class NotFoundError(DomainError):
    """A record named by the caller does not exist."""

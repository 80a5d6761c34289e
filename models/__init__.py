"""Threadline's domain core: the CRM's tables, its database access and the operations on them.

Imports nothing from daemon/ or admin/ (and no Flask or IMAP library): both of those call into here. Import
the modules themselves (`from models.schema import Contact`): this package imports none of them up front,
so a process that needs only the message vocabulary (models.messages, in the parser's worker processes)
does not load SQLAlchemy.
"""

"""What the panel needs to connect a mailbox through OAuth: a `MailboxConnector`, handed to create_app.

The protocol work (the authorization code grant with PKCE, storing the grant encrypted) is the daemon's
OAuth client's (daemon.oauth, daemon.credentials); admin/ never imports daemon/, so the shell
(threadline/cli.py) passes an object with these two methods. Without one, the panel says to connect from the
command line. A failure is a models.errors.DomainError whose message is shown to the user (it never holds a
token, a code or the client secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from settings import MailboxSettings


class MailboxConnector(Protocol):
    def begin(self, mailbox: MailboxSettings, redirect_uri: str) -> dict[str, str]:
        """Start the flow: the provider's consent page address under "url", and what `finish` needs later
        (kept in the user's signed session cookie between the two)."""
        ...

    def finish(self, mailbox: MailboxSettings, pending: Mapping[str, str], callback_url: str) -> None:
        """Check the provider's answer (the address it sent the browser back to), get the tokens and store
        the grant; the running daemon then starts syncing the mailbox."""
        ...

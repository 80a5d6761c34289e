"""The content key: what identifies one message in every inbox it was delivered to.

It is `mid:<message-id>` when there is a Message-ID, else `sha256:` over the fields every delivery of the
message shares: the Date (as parsed, UTC), From/To/Cc addresses, the subject and the body text with line
endings and trailing blanks normalized. Received, Delivered-To, Return-Path and other per-inbox headers never
enter it. Keys stay within 1000 characters (the column size): an absurdly long Message-ID is hashed into
`mid:sha256:<hex>`.
"""

from __future__ import annotations

import hashlib
import json

from daemon.parsing.headers import normalize_message_id
from daemon.parsing.text import normalize_text
from models.messages import MessageHeaders

CONTENT_KEY_MAX_LENGTH = 1000


def content_key(headers: MessageHeaders, body_text: str = "") -> str:
    """With a Message-ID the body is not needed, so a header-only pass can dedupe; without one the key is
    a hash of what every copy shares, so pass the message's body text (`MessageBody.text`)."""
    message_id = normalize_message_id(headers.message_id)
    if message_id is not None:
        key = "mid:" + message_id
        if len(key) <= CONTENT_KEY_MAX_LENGTH:
            return key
        return "mid:sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    stable = [
        "threadline-content-key-v1",
        headers.date.isoformat() if headers.date else "",
        [address.email for address in headers.from_],
        [address.email for address in headers.to],
        [address.email for address in headers.cc],
        headers.subject,
        normalize_text(body_text),
    ]
    return "sha256:" + hashlib.sha256(json.dumps(stable, separators=(",", ":")).encode("ascii")).hexdigest()

"""Attachments: names that are safe to show and the same on every parse, and the size limit on contents.

A sender's file name loses directories, control characters and absurd length. A part without a name is
named after its Content-ID (Outlook's "image001.png@01DA..." gives image001.png) or `attachment-<n><ext>`:
never a random name, which would make two parses of one message disagree. Contents over
`max_attachment_bytes` are not kept (name, type and size still are).
"""

from __future__ import annotations

import mimetypes
import re

from daemon.parsing.text import one_line
from models.messages import Attachment

DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024

# mail-parser names a part that has no filename with ten random lower-case letters.
_GENERATED_NAME_RE = re.compile(r"[a-z]{10}\.(?:txt|rtf)")
_PATH_SEPARATOR_RE = re.compile(r"[/\\]")
_MAX_FILENAME_LENGTH = 255


def clean_filename(name: str) -> str:
    """A display name without directories, controls or absurd length."""
    name = one_line(_PATH_SEPARATOR_RE.split(name)[-1]).strip(" .")
    if len(name) > _MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 16:
            name = stem[: _MAX_FILENAME_LENGTH - len(extension) - 1] + "." + extension
        else:
            name = name[:_MAX_FILENAME_LENGTH]
    return name


def fallback_filename(content_type: str, index: int, content_id: str = "") -> str:
    """The name of the index-th attachment that came without one."""
    extension = mimetypes.guess_extension(content_type) or ""
    # Outlook's Content-IDs look like "image001.png@01DA2B3C.4D5E6F70": the part before '@' is a name.
    stem = clean_filename(content_id.strip("<> ").split("@", 1)[0]) if content_id else ""
    if not stem:
        return f"attachment-{index}{extension}"
    return stem if "." in stem else stem + extension


def attachment_name(given: str, content_type: str, index: int, content_id: str, raw: bytes) -> str:
    """The name to show for a part the body parser named `given` (possibly made up by it)."""
    if content_id and given == content_id:
        return fallback_filename(content_type, index, content_id)
    if _GENERATED_NAME_RE.fullmatch(given) and given.encode("ascii") not in raw:
        return fallback_filename(content_type, index)
    return clean_filename(given) or fallback_filename(content_type, index)


def make_attachment(filename: str, content_type: str, data: bytes, max_bytes: int) -> Attachment:
    size = len(data)
    return Attachment(
        filename=filename,
        content_type=content_type,
        size=size,
        content=data if size <= max_bytes else None,
    )

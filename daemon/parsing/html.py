"""HTML from mail: sanitized for the panel, and turned into plain text where a message has no text part.

`sanitize_html` keeps formatting only (nh3). Remote images are not loaded by the CRM page (they are tracking
pixels as often as not): every <img> loses its src unless it is `cid:` (an attachment of the message) or an
inline `data:image/` raster; the alt text stays. Links keep http, https and mailto hrefs only and get
rel="noopener noreferrer nofollow". `html_to_text` keeps block structure as line breaks and blockquotes as
'> ' lines, so the snippet can leave quoted history out.
"""

from __future__ import annotations

import logging
import re
from html import unescape
from html.parser import HTMLParser

import nh3

from daemon.parsing.text import normalize_text, scrub

log = logging.getLogger(__name__)

_ALLOWED_TAGS = frozenset(
    {
        "p", "br", "div", "span", "b", "i", "u", "strong", "em", "a", "ul", "ol", "li",
        "table", "thead", "tbody", "tr", "td", "th", "blockquote", "pre", "code",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "img", "font",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "*": {"title", "align"},
    "a": {"href"},
    "img": {"src", "alt"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
# Elements whose content must go with them; anything else unknown is unwrapped and its text kept.
_DROPPED_WITH_CONTENT = frozenset({"script", "style", "title", "xml", "noscript", "template"})
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_EMBEDDED_IMAGE_RE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp)[;,]", re.IGNORECASE)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    # nh3 has already removed URLs whose scheme is not listed (that list admits cid: and data: for
    # images); what remains is narrowed per attribute here.
    if attribute == "src":
        source = value.strip()
        if source.lower().startswith("cid:") or _EMBEDDED_IMAGE_RE.match(source):
            return value
        return None
    if attribute == "href":
        return value if value.strip().lower().startswith(_LINK_SCHEMES) else None
    return value


_CLEANER = nh3.Cleaner(
    tags=set(_ALLOWED_TAGS),
    clean_content_tags=set(_DROPPED_WITH_CONTENT),
    attributes=_ALLOWED_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    strip_comments=True,
    link_rel="noopener noreferrer nofollow",
    url_schemes={"http", "https", "mailto", "cid", "data"},
    url_relative="deny",
)


def sanitize_html(html: str) -> str:
    """HTML safe to show inside the CRM: formatting kept, active content and remote loads removed."""
    return _CLEANER.clean(scrub(html))


_BLOCK_TAGS = frozenset(
    {
        "p", "div", "br", "li", "ul", "ol", "tr", "table", "thead", "tbody", "blockquote", "pre", "hr",
        "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer", "address", "dt", "dd",
    }
)  # fmt: skip
_QUOTE_PREFIX_RE = re.compile(r"^((?:> )*)(.*)$")
_WHITESPACE_RE = re.compile(r"\s+")


class _HtmlText(HTMLParser):
    """Plain text of an HTML body; blockquotes become '> ' lines so snippets can drop them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._quote_depth = 0
        self._skip_depth = 0
        self._pre_depth = 0

    def _newline(self) -> None:
        self._chunks.append("\n" + "> " * self._quote_depth)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self._skip_depth += 1
            return
        if tag == "blockquote":
            self._quote_depth += 1
        elif tag == "pre":
            self._pre_depth += 1
        if tag in _BLOCK_TAGS:
            self._newline()
        elif tag in ("td", "th"):
            self._chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if tag == "blockquote":
            self._quote_depth = max(0, self._quote_depth - 1)
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _BLOCK_TAGS:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            for index, line in enumerate(data.split("\n")):
                if index:
                    self._newline()
                self._chunks.append(line)
        else:
            self._chunks.append(_WHITESPACE_RE.sub(" ", data))

    def text(self) -> str:
        lines = []
        for line in "".join(self._chunks).split("\n"):
            match = _QUOTE_PREFIX_RE.match(line)
            prefix, body = (match[1], match[2].strip()) if match else ("", line.strip())
            lines.append(prefix + body if body else "")
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def html_to_text(html: str) -> str:
    """Plain text of an HTML body, for messages that carry no text/plain part."""
    extractor = _HtmlText()
    try:
        extractor.feed(html)
        extractor.close()
    except Exception:
        # html.parser still has assertion paths for some malformed declarations.
        log.debug("HTML text extraction failed, stripping tags instead", exc_info=True)
        return normalize_text(unescape(re.sub(r"<[^>]*>", " ", html)))
    return normalize_text(extractor.text())

"""Reading email: raw RFC 5322 bytes in, the message vocabulary of models.messages out.

One module per job, each importable on its own (the parser's worker processes load only what they use):

- `text`: bytes to text: charset labels, lenient decoding, what a database cannot store.
- `header_block`: finding and mending the header block, capped at `max_header_bytes`.
- `encoded_words`: header values to display text: unfolding, 8-bit bytes, RFC 2047 encoded words.
- `addresses`: address lists to `Address` values.
- `headers`: the cheap pass every message gets: `parse_headers` -> `MessageHeaders` (facts only).
- `content_key`: the key that identifies one message in every inbox it reached.
- `html`: sanitizing HTML for the panel, and HTML to plain text.
- `snippet`: the one-line preview.
- `attachments`: naming attachments the way every parse of a message agrees on.
- `mime_tree`: the stdlib MIME tree of a message, built fast for well-formed mail.
- `body`: the body parser, the one module importing mail-parser, with the MIME caps:
  `parse_body` -> `MessageBody`.
- `message`: `parse_message`, headers and body at once, for callers holding the raw bytes.

Nothing here touches the network, the database or the configuration; limits arrive as arguments.
"""

"""Raw RFC 822 messages -> the few fields a task needs, with the standard library `email` package.

Lenient on purpose (old mail is full of bad MIME): unknown charsets fall back instead of raising;
a message is refused, with a short reason, only when no readable text is left.
"""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email import errors
from email.header import decode_header
from html.parser import HTMLParser


class EmailParseError(ValueError):
    """The message holds no usable text; `reason` is short, for counting skips."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedEmail:
    from_: str
    to: str
    subject: str
    date: str
    body: str


def parse_email(raw: bytes | str) -> ParsedEmail:
    """`raw`: the message's bytes (a str is taken as UTF-8). A leading mbox "From addr date" line, as
    in the SpamAssassin files, is the parser's unixfrom, not a header."""
    msg = email.message_from_bytes(raw.encode() if isinstance(raw, str) else raw)
    From, To, Subject, Date = (decode_header_value(msg.get(name)) for name in ("From", "To", "Subject", "Date"))
    return ParsedEmail(From, To, Subject, Date, body_text(msg))


def decode_text(data: bytes, charset: str | None) -> str:
    """Declared charset, else UTF-8, else Windows-1252 (what mislabelled 8-bit mail almost always is)
    with replacement characters: never raises."""
    for cs in (charset, "utf-8"):
        try:
            return data.decode(cs or "utf-8")
        except (LookupError, ValueError):  # unknown charset, undecodable bytes
            pass
    return data.decode("cp1252", errors="replace")


def decode_header_value(value) -> str:
    """RFC 2047 encoded words decoded, whitespace folded to single spaces; "" for a missing header."""
    if value is None:
        return ""
    try:
        chunks = decode_header(value)
    except (errors.HeaderParseError, ValueError):  # malformed encoded words: keep the header as it came
        chunks = [(str(value), None)]
    text = "".join(c if isinstance(c, str) else decode_text(c, cs) for c, cs in chunks)
    return re.sub(r"\s+", " ", text).strip()


def body_text(msg) -> str:
    """The inline text/plain parts, else the text/html parts as text; attachments and non-text
    parts dropped."""
    parts = list(_inline_text_parts(msg))
    if not parts:
        broken = any(
            isinstance(
                d,
                (
                    errors.NoBoundaryInMultipartDefect,
                    errors.StartBoundaryNotFoundDefect,
                    errors.MultipartInvariantViolationDefect,
                ),
            )
            for p in msg.walk()
            for d in p.defects
        )
        raise EmailParseError("broken MIME" if broken else "no text part")
    texts: dict[str, list[str]] = {"plain": [], "html": []}
    undecodable = 0
    for part in parts:
        data = part.get_payload(decode=True) or b""
        text = decode_text(data, part.get_content_charset())
        if any(isinstance(d, errors.InvalidBase64LengthDefect) for d in part.defects) or _garbled(text):
            undecodable += 1
            continue
        texts[_content_type(part).split("/")[1]].append(text)
    body = tidy("\n\n".join(texts["plain"]))
    if not body:
        body = tidy("\n\n".join(html_to_text(t) for t in texts["html"]))
    if not body:
        raise EmailParseError("undecodable" if undecodable else "empty body")
    return body


def _inline_text_parts(part):
    if part.get_content_disposition() == "attachment":
        return
    if part.is_multipart():  # also message/rfc822: a forwarded message's text is kept
        for sub in part.get_payload():
            yield from _inline_text_parts(sub)
    elif _content_type(part) in ("text/plain", "text/html"):
        yield part


def _content_type(part) -> str:
    return part.get_content_type().split()[0]  # "text/plain charset=us-ascii": a missing ";" is common in spam


def _garbled(text: str) -> bool:
    """Binary noise (e.g. a base64 body that decoded to junk): many control or replacement characters."""
    bad = sum(c == "\ufffd" or (ord(c) < 32 and c not in "\t\n\r\f") for c in text)
    return bad > 0.1 * len(text)


def tidy(text: str) -> str:
    """Unix newlines, no trailing whitespace, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


class _HTMLText(HTMLParser):
    SKIP = frozenset({"script", "style", "title"})  # not "head": an unclosed <head> would hide the whole page
    BLOCK = frozenset(
        {
            "br",
            "p",
            "div",
            "tr",
            "li",
            "ul",
            "ol",
            "table",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "hr",
            "blockquote",
            "pre",
        }
    )

    def __init__(self):
        super().__init__(convert_charrefs=True)  # entities unescaped in handle_data
        self.out, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.out.append(re.sub(r"\s+", " ", data.replace("\xa0", " ")))  # HTML whitespace is not layout


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return tidy("\n".join(line.strip() for line in "".join(parser.out).split("\n")))

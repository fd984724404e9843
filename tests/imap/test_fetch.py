"""Tests for imap.fetch: FETCH response data for one message.

Pure tier: a corpus of messages parsed with mailstore.mime.parse_message into unsaved
Blob/Message rows, and for each the exact bytes every fetch item renders to. The
BODYSTRUCTURE we send is read back and compared with what Python's `email` package
finds in the same bytes; one Django test goes through mailstore.actions.append.
"""
import email
import hashlib
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imap.fetch import (
    UnknownTransferEncoding,
    email_id,
    format_internaldate,
    header_only,
    needs_bytes,
    render,
    render_summaries,
    render_summary,
    sets_seen,
    summary_plan,
    thread_id,
)
from imap.parser import parse_command
from imap.responses import nstring, string, text_nstring
from mailstore.actions import thread_key
from mailstore.mime import parse_message
from mailstore.models import Blob, Message

INTERNALDATE = datetime(2024, 7, 1, 9, 5, 3, tzinfo=timezone.utc)


def crlf(text):
    return text.replace("\n", "\r\n").encode("utf-8")


def lit(data):
    """The literal the server sends for `data`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return b"{%d}\r\n" % len(data) + data


def make(raw, *, prefix=b"", uid=7, modseq=3):
    parsed = parse_message(raw)
    blob = Blob(
        name="blob", size=len(raw), sha256=hashlib.sha256(raw).hexdigest(),
        header_size=parsed.header_size, envelope=parsed.envelope,
        structure=parsed.structure, preview=parsed.preview,
    )
    key = thread_key(parsed.message_id[:998], parsed.in_reply_to[:998], parsed.references, blob.sha256)
    return Message(
        uid=uid, modseq=modseq, internaldate=INTERNALDATE, size=len(prefix) + len(raw),
        blob=blob, prefix=prefix, thread_key=key,
    )


def items(text):
    return parse_command(b"a FETCH 1 " + text.encode("utf-8")).items


def fetch(message, text, *, flags=(), utf8=False, uid=False, modseq=None):
    wanted = items(text)
    raw = bytes(message.prefix) + _blob_bytes[id(message.blob)] if needs_bytes(wanted) else None
    return render(
        wanted, message=message, flags=list(flags), modseq=message.modseq if modseq is None else modseq,
        raw=raw, utf8=utf8, uid=uid,
    )


_blob_bytes = {}


def message_of(raw, **kwargs):
    message = make(raw, **kwargs)
    _blob_bytes[id(message.blob)] = raw
    return message


# --- The corpus ---------------------------------------------------------------------------

PLAIN = crlf(
    "Date: Mon, 1 Jul 2024 09:00:00 +0200\n"
    "From: Alice Example <alice@example.test>\n"
    'To: bob@example.test, "Carol, C." <carol@example.test>\n'
    "Cc: Team: dave@example.test, erin@example.test;\n"
    "Subject: Lunch?\n"
    "Message-ID: <1@example.test>\n"
    "In-Reply-To: <0@example.test>\n"
    "X-Folded: one\n"
    " two\n"
    "\n"
    "Are you free\n"
    "at noon?\n"
)

ALTERNATIVE = crlf(
    "From: a@example.test\n"
    "Subject: alt\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/alternative; boundary="XX"\n'
    "\n"
    "--XX\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Caf=C3=A9 au lait\n"
    "--XX\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "PHA+Q2Fmw6k8L3A+\n"
    "--XX--\n"
)

MIXED = crlf(
    "From: a@example.test\n"
    "Subject: report\n"
    "Content-Type: multipart/mixed; boundary=frontier\n"
    "Content-Language: en\n"
    "\n"
    "This is a preamble.\n"
    "--frontier\n"
    "Content-Type: text/plain\n"
    "\n"
    "See attached.\n"
    "--frontier\n"
    'Content-Type: application/pdf; name="report.pdf"\n'
    "Content-Transfer-Encoding: base64\n"
    'Content-Disposition: attachment; filename="report.pdf"\n'
    "Content-ID: <part2@example.test>\n"
    "Content-Description: The report\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "Content-Language: en, fr\n"
    "Content-Location: http://example.test/report.pdf\n"
    "\n"
    "JVBERi0xLjQKAAECAw==\n"
    "--frontier--\n"
)

EMBEDDED = crlf(
    "From: b@example.test\n"
    "Subject: original\n"
    'Content-Type: multipart/alternative; boundary="inner"\n'
    "\n"
    "--inner\n"
    "Content-Type: text/plain\n"
    "\n"
    "plain\n"
    "--inner\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>html</b>\n"
    "--inner--"
)
NESTED = crlf(
    "From: a@example.test\n"
    "Subject: fwd\n"
    'Content-Type: multipart/mixed; boundary="outer"\n'
    "\n"
    "--outer\n"
    "Content-Type: text/plain; charset=us-ascii\n"
    "\n"
    "See below.\n"
    "--outer\n"
    "Content-Type: message/rfc822\n"
    "\n"
) + EMBEDDED + crlf("\n--outer--\n")

BARE_LF = b"From: a@example.test\nSubject: bare\nX-Long: a\n b\n\nline one\nline two\n"

PREFIX = b"Return-Path: <a@example.test>\r\nDelivered-To: alice@example.test\r\n"

UTF8_HEADERS = "From: Zoë <zoe@example.test>\r\nSubject: Grüße\r\n\r\nhi\r\n".encode("utf-8")

NO_BOUNDARY = crlf("Subject: x\nContent-Type: multipart/mixed\n\nhello\n")
LOST_BOUNDARY = crlf("Subject: x\nContent-Type: multipart/mixed; boundary=zz\n\nhello\n")
UUENCODED = crlf(
    "Subject: x\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: x-uuencode\n"
    "\n"
    "begin 644 x\n"
)
HEADER_ONLY = b"Subject: nobody\r\n"
TOP_RFC822 = crlf("Subject: outer\nContent-Type: message/rfc822\n\nSubject: inner\n\nhi\n")
BINARY_BODY = b"Subject: x\r\nContent-Transfer-Encoding: binary\r\n\na\x00b"

CORPUS = {
    "plain": PLAIN,
    "alternative": ALTERNATIVE,
    "mixed": MIXED,
    "nested": NESTED,
    "bare-lf": BARE_LF,
    "utf8-headers": UTF8_HEADERS,
    "no-boundary": NO_BOUNDARY,
    "lost-boundary": LOST_BOUNDARY,
    "uuencoded": UUENCODED,
    "header-only": HEADER_ONLY,
    "top-rfc822": TOP_RFC822,
    "binary-body": BINARY_BODY,
}


# --- ENVELOPE -------------------------------------------------------------------------------

ENVELOPES = [
    (
        PLAIN,
        b'("Mon, 1 Jul 2024 09:00:00 +0200" "Lunch?"'
        b' (("Alice Example" NIL "alice" "example.test"))'
        b' (("Alice Example" NIL "alice" "example.test"))'
        b' (("Alice Example" NIL "alice" "example.test"))'
        b' ((NIL NIL "bob" "example.test")("Carol, C." NIL "carol" "example.test"))'
        b' ((NIL NIL "Team" NIL)(NIL NIL "dave" "example.test")(NIL NIL "erin" "example.test")'
        b"(NIL NIL NIL NIL))"
        b' NIL "<0@example.test>" "<1@example.test>")',
    ),
    (
        NESTED,
        b'(NIL "fwd" ((NIL NIL "a" "example.test")) ((NIL NIL "a" "example.test"))'
        b' ((NIL NIL "a" "example.test")) NIL NIL NIL NIL NIL)',
    ),
    (HEADER_ONLY, b'(NIL "nobody" NIL NIL NIL NIL NIL NIL NIL NIL)'),
    (
        UTF8_HEADERS,
        b"(NIL " + lit("Grüße") + b" ((" + lit("Zoë") + b' NIL "zoe" "example.test"))'
        b" ((" + lit("Zoë") + b' NIL "zoe" "example.test"))'
        b" ((" + lit("Zoë") + b' NIL "zoe" "example.test")) NIL NIL NIL NIL NIL)',
    ),
]


@pytest.mark.parametrize("raw, expected", ENVELOPES)
def test_envelope(raw, expected):
    assert fetch(message_of(raw), "ENVELOPE") == b"ENVELOPE " + expected


def test_envelope_quotes_utf8_once_enabled():
    expected = (
        '(NIL "Grüße" (("Zoë" NIL "zoe" "example.test")) (("Zoë" NIL "zoe" "example.test"))'
        ' (("Zoë" NIL "zoe" "example.test")) NIL NIL NIL NIL NIL)'
    ).encode("utf-8")
    assert fetch(message_of(UTF8_HEADERS), "ENVELOPE", utf8=True) == b"ENVELOPE " + expected


def test_envelope_escapes_quotes_and_backslashes():
    raw = crlf('From: "Say \\"hi\\" \\\\o/" <x@example.test>\nSubject: a "b" \\ c\n\nx\n')
    assert fetch(message_of(raw), "ENVELOPE").startswith(
        b'ENVELOPE (NIL "a \\"b\\" \\\\ c" (("Say \\"hi\\" \\\\o/" NIL "x" "example.test"))'
    )


def test_envelope_not_stored_is_all_nil():
    message = message_of(PLAIN)
    message.blob.envelope = None
    assert fetch(message, "ENVELOPE") == b"ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


# --- BODYSTRUCTURE and BODY -------------------------------------------------------------------

TEXT_PART_ALT = b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 17 1'
HTML_PART_ALT = b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "BASE64" 16 1'
MIXED_TEXT = b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 13 1'
MIXED_PDF = (
    b'("APPLICATION" "PDF" ("NAME" "report.pdf") "<part2@example.test>" "The report" "BASE64" 20'
)
MIXED_PDF_EXT = (
    b' "Q2hlY2sgSW50ZWdyaXR5IQ==" ("ATTACHMENT" ("FILENAME" "report.pdf")) ("en" "fr")'
    b' "http://example.test/report.pdf"'
)
NESTED_INNER_ENVELOPE = (
    b'(NIL "original" ((NIL NIL "b" "example.test")) ((NIL NIL "b" "example.test"))'
    b' ((NIL NIL "b" "example.test")) NIL NIL NIL NIL NIL)'
)

BODYSTRUCTURES = [
    ("plain", PLAIN, b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 24 2 NIL NIL NIL NIL)'),
    (
        "alternative",
        ALTERNATIVE,
        b"(" + TEXT_PART_ALT + b" NIL NIL NIL NIL)" + HTML_PART_ALT + b" NIL NIL NIL NIL)"
        b' "ALTERNATIVE" ("BOUNDARY" "XX") NIL NIL NIL)',
    ),
    (
        "mixed",
        MIXED,
        b"(" + MIXED_TEXT + b" NIL NIL NIL NIL)" + MIXED_PDF + MIXED_PDF_EXT + b')'
        b' "MIXED" ("BOUNDARY" "frontier") NIL "en" NIL)',
    ),
    (
        "nested",
        NESTED,
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d ' % len(EMBEDDED)
        + NESTED_INNER_ENVELOPE
        + b' (("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "us-ascii") NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)'
        b' "ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL) 13 NIL NIL NIL NIL)'
        b' "MIXED" ("BOUNDARY" "outer") NIL NIL NIL)',
    ),
    ("bare-lf", BARE_LF, b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 18 2 NIL NIL NIL NIL)'),
    (
        "no-boundary",
        NO_BOUNDARY,
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1 NIL NIL NIL NIL)',
    ),
    (
        "lost-boundary",
        LOST_BOUNDARY,
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)'
        b' "MIXED" ("BOUNDARY" "zz") NIL NIL NIL)',
    ),
    (
        "uuencoded",
        UUENCODED,
        b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "X-UUENCODE" 13 NIL NIL NIL NIL)',
    ),
    ("header-only", HEADER_ONLY, b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)'),
    (
        "top-rfc822",
        TOP_RFC822,
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 22 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 4 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)',
    ),
]


@pytest.mark.parametrize("name, raw, expected", BODYSTRUCTURES, ids=[row[0] for row in BODYSTRUCTURES])
def test_bodystructure(name, raw, expected):
    assert fetch(message_of(raw), "BODYSTRUCTURE") == b"BODYSTRUCTURE " + expected


BODIES = [
    ("plain", PLAIN, b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 24 2)'),
    (
        "alternative",
        ALTERNATIVE,
        b"(" + TEXT_PART_ALT + b")" + HTML_PART_ALT + b') "ALTERNATIVE")',
    ),
    ("mixed", MIXED, b"(" + MIXED_TEXT + b")" + MIXED_PDF + b') "MIXED")'),
    (
        "nested",
        NESTED,
        b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" %d ' % len(EMBEDDED)
        + NESTED_INNER_ENVELOPE
        + b' (("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1)'
        b'("TEXT" "HTML" ("CHARSET" "us-ascii") NIL NIL "7BIT" 11 1) "ALTERNATIVE") 13) "MIXED")',
    ),
]


@pytest.mark.parametrize("name, raw, expected", BODIES, ids=[row[0] for row in BODIES])
def test_body_is_bodystructure_without_extension_data(name, raw, expected):
    assert fetch(message_of(raw), "BODY") == b"BODY " + expected


def test_bodystructure_parameters_in_utf8():
    raw = crlf(
        "Subject: x\n"
        "Content-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=utf-8''%C3%A9t%C3%A9.pdf\n"
        "\n"
        "x\n"
    )
    name = "été.pdf"
    assert fetch(message_of(raw), "BODYSTRUCTURE") == (
        b'BODYSTRUCTURE ("APPLICATION" "PDF" NIL NIL NIL "7BIT" 3 NIL ("ATTACHMENT" ("FILENAME" '
        + lit(name) + b")) NIL NIL)"
    )
    assert fetch(message_of(raw), "BODYSTRUCTURE", utf8=True) == (
        'BODYSTRUCTURE ("APPLICATION" "PDF" NIL NIL NIL "7BIT" 3 NIL ("ATTACHMENT" ("FILENAME" '
        f'"{name}")) NIL NIL)'
    ).encode("utf-8")


def test_bodystructure_reads_no_bytes():
    wanted = items("(ENVELOPE BODYSTRUCTURE BODY FLAGS UID RFC822.SIZE INTERNALDATE MODSEQ PREVIEW EMAILID)")
    assert not needs_bytes(wanted)
    render(wanted, message=message_of(NESTED), flags=[], modseq=1, raw=None)  # no ValueError


# --- ENVELOPE and BODYSTRUCTURE rendered when stored -------------------------------------------

UTF8_PARAMETERS = crlf(
    "Subject: x\nContent-Type: application/pdf\n"
    "Content-Disposition: attachment; filename*=utf-8''%C3%A9t%C3%A9.pdf\n\nx\n"
)
ESCAPES = crlf('From: "Say \\"hi\\" \\\\o/" <x@example.test>\nSubject: a "b" \\ c\n\nx\n')


def summarised(raw):
    """message_of(raw) as the store keeps it: with ENVELOPE and BODYSTRUCTURE rendered."""
    message = message_of(raw)
    message.blob.imap_envelope, message.blob.imap_bodystructure = render_summary(
        message.blob.envelope, message.blob.structure
    )
    return message


@pytest.mark.parametrize("raw", [*CORPUS.values(), UTF8_PARAMETERS, ESCAPES], ids=[*CORPUS, "utf8-parameters", "escapes"])
@pytest.mark.parametrize("utf8", [False, True])
def test_the_stored_envelope_and_bodystructure_are_what_rendering_gives(raw, utf8):
    wanted = "(ENVELOPE BODYSTRUCTURE BODY)"
    assert fetch(summarised(raw), wanted, utf8=utf8) == fetch(message_of(raw), wanted, utf8=utf8)


def test_fetch_sends_the_stored_forms_as_they_are():
    message = message_of(PLAIN)
    message.blob.imap_envelope = b"(stored envelope)"
    message.blob.imap_bodystructure = memoryview(b"(stored structure)")  # as PostgreSQL gives it
    assert fetch(message, "(ENVELOPE BODYSTRUCTURE)") == b"ENVELOPE (stored envelope) BODYSTRUCTURE (stored structure)"
    # Stored without UTF-8: the same bytes for a UTF-8 session when all ASCII, else rendered for it.
    assert fetch(message, "ENVELOPE", utf8=True) == b"ENVELOPE (stored envelope)"
    message.blob.imap_envelope = "(envelope with an 8-bit literal: é)".encode()
    assert fetch(message, "ENVELOPE", utf8=True) == fetch(message_of(PLAIN), "ENVELOPE", utf8=True)


@pytest.mark.parametrize("text", [
    "(ENVELOPE BODYSTRUCTURE)", "(FLAGS ENVELOPE)", "(BODYSTRUCTURE UID MODSEQ FLAGS)", "(ENVELOPE ENVELOPE FLAGS)",
])
@pytest.mark.parametrize("uid", [False, True])
@pytest.mark.parametrize("utf8", [False, True])
def test_lists_from_the_summaries_are_what_render_gives(text, uid, utf8):
    corpus = [summarised(raw) for raw in (*CORPUS.values(), ESCAPES)]
    # 8-bit text goes to a UTF-8 session differently from how it is stored: render() does that.
    corpus = [m for m in corpus if not utf8 or (m.blob.imap_envelope + m.blob.imap_bodystructure).isascii()]
    views = {n: (n * 2, ("\\Seen", "$Work") if n % 2 else (), 100 + n) for n in range(1, len(corpus) + 1)}
    rows = [(n, m.blob.imap_envelope, m.blob.imap_bodystructure) for n, m in enumerate(corpus, 1)]
    names = summary_plan(items(text), uid=uid)
    expected = [
        b"* %d FETCH (%s)\r\n" % (views[n][0], render(items(text), message=m, flags=views[n][1], modseq=views[n][2],
                                                      utf8=utf8, uid=uid))
        for n, m in enumerate(corpus, 1)
        for m.uid in [n]
    ]
    assert render_summaries(names, rows, views, utf8=utf8) == expected


def test_lists_from_the_summaries_leave_to_render_what_they_cannot_copy():
    assert summary_plan(items("(ENVELOPE INTERNALDATE)")) is None and summary_plan(items("BODY.PEEK[]")) is None
    names = summary_plan(items("ENVELOPE"))
    message = summarised(PLAIN)
    views = {1: (1, (), 1)}
    assert render_summaries(names, [(1, message.blob.imap_envelope, None)], views, utf8=False)
    assert render_summaries(names, [(1, None, None)], views, utf8=False) is None  # no summary stored
    eight_bit = "(envelope with an 8-bit literal: é)".encode()
    assert render_summaries(names, [(1, eight_bit, None)], views, utf8=False)
    assert render_summaries(names, [(1, eight_bit, None)], views, utf8=True) is None  # rendered for UTF-8


# --- BODY[section] --------------------------------------------------------------------------

PLAIN_HEADER = PLAIN[: PLAIN.index(b"\r\n\r\n") + 4]
PLAIN_TEXT = b"Are you free\r\nat noon?\r\n"

SECTIONS = [
    # whole message, header, text
    (PLAIN, "BODY[]", b"BODY[] " + lit(PLAIN)),
    (PLAIN, "BODY.PEEK[HEADER]", b"BODY[HEADER] " + lit(PLAIN_HEADER)),
    (PLAIN, "BODY[TEXT]", b"BODY[TEXT] " + lit(PLAIN_TEXT)),
    (PLAIN, "RFC822", b"RFC822 " + lit(PLAIN)),
    (PLAIN, "RFC822.HEADER", b"RFC822.HEADER " + lit(PLAIN_HEADER)),
    (PLAIN, "RFC822.TEXT", b"RFC822.TEXT " + lit(PLAIN_TEXT)),
    # HEADER.FIELDS: any case, the message's order, folded lines kept, blank line at the end
    (
        PLAIN,
        "BODY[HEADER.FIELDS (x-folded SUBJECT)]",
        b"BODY[HEADER.FIELDS (x-folded SUBJECT)] " + lit(b"Subject: Lunch?\r\nX-Folded: one\r\n two\r\n\r\n"),
    ),
    (PLAIN, "BODY[HEADER.FIELDS (X-Absent)]", b"BODY[HEADER.FIELDS (X-Absent)] " + lit(b"\r\n")),
    (
        PLAIN,
        "BODY[HEADER.FIELDS.NOT (Date From To Cc Message-ID In-Reply-To)]",
        b"BODY[HEADER.FIELDS.NOT (Date From To Cc Message-ID In-Reply-To)] "
        + lit(b"Subject: Lunch?\r\nX-Folded: one\r\n two\r\n\r\n"),
    ),
    # a non-multipart message: its body is part 1; part 2 does not exist
    (PLAIN, "BODY[1]", b"BODY[1] " + lit(PLAIN_TEXT)),
    (PLAIN, "BODY[1.MIME]", b"BODY[1.MIME] " + lit(PLAIN_HEADER)),
    (PLAIN, "BODY[2]", b'BODY[2] ""'),
    (PLAIN, "BODY[1.1]", b'BODY[1.1] ""'),
    (PLAIN, "BODY[1.HEADER]", b'BODY[1.HEADER] ""'),
    # partial: the origin octet in the answer; past the end an empty string
    (PLAIN, "BODY[]<0.4>", b'BODY[]<0> "Date"'),
    (PLAIN, "BODY[TEXT]<4.8>", b'BODY[TEXT]<4> "you free"'),
    (PLAIN, "BODY[TEXT]<14.1000>", b'BODY[TEXT]<14> ' + lit(b"at noon?\r\n")),
    (PLAIN, "BODY[TEXT]<24.10>", b'BODY[TEXT]<24> ""'),
    (PLAIN, "BODY[TEXT]<9999.1>", b'BODY[TEXT]<9999> ""'),
    # multipart parts and their MIME headers
    (ALTERNATIVE, "BODY[1]", b'BODY[1] "Caf=C3=A9 au lait"'),
    (
        ALTERNATIVE,
        "BODY[1.MIME]",
        b"BODY[1.MIME] "
        + lit(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"),
    ),
    (ALTERNATIVE, "BODY[2]", b'BODY[2] "PHA+Q2Fmw6k8L3A+"'),
    (ALTERNATIVE, "BODY[3]", b'BODY[3] ""'),
    (ALTERNATIVE, "BODY[1.TEXT]", b'BODY[1.TEXT] ""'),
    (MIXED, "BODY[2]", b'BODY[2] "JVBERi0xLjQKAAECAw=="'),
    # message/rfc822: N.HEADER and N.TEXT are the embedded message's
    (NESTED, "BODY[1]", b'BODY[1] "See below."'),
    (NESTED, "BODY[2]", b"BODY[2] " + lit(EMBEDDED)),
    (NESTED, "BODY[2.MIME]", b"BODY[2.MIME] " + lit(b"Content-Type: message/rfc822\r\n\r\n")),
    (
        NESTED,
        "BODY[2.HEADER]",
        b"BODY[2.HEADER] " + lit(EMBEDDED[: EMBEDDED.index(b"\r\n\r\n") + 4]),
    ),
    (NESTED, "BODY[2.TEXT]", b"BODY[2.TEXT] " + lit(EMBEDDED[EMBEDDED.index(b"\r\n\r\n") + 4 :])),
    (
        NESTED,
        "BODY[2.HEADER.FIELDS (subject)]",
        b"BODY[2.HEADER.FIELDS (subject)] " + lit(b"Subject: original\r\n\r\n"),
    ),
    (NESTED, "BODY[2.1]", b'BODY[2.1] "plain"'),
    (NESTED, "BODY[2.2]", b'BODY[2.2] "<b>html</b>"'),
    (NESTED, "BODY[2.2.MIME]", b"BODY[2.2.MIME] " + lit(b"Content-Type: text/html\r\n\r\n")),
    (NESTED, "BODY[2.3]", b'BODY[2.3] ""'),
    (NESTED, "BODY[2.1.1]", b'BODY[2.1.1] ""'),
    (NESTED, "BODY[3]", b'BODY[3] ""'),
    # a message whose body is a message: part 1 is that message, 1.1 its body
    (TOP_RFC822, "BODY[1]", b"BODY[1] " + lit(b"Subject: inner\r\n\r\nhi\r\n")),
    (TOP_RFC822, "BODY[1.HEADER]", b"BODY[1.HEADER] " + lit(b"Subject: inner\r\n\r\n")),
    (TOP_RFC822, "BODY[1.TEXT]", b"BODY[1.TEXT] " + lit(b"hi\r\n")),
    (TOP_RFC822, "BODY[1.1]", b"BODY[1.1] " + lit(b"hi\r\n")),
    (TOP_RFC822, "BODY[1.2]", b'BODY[1.2] ""'),
    # bare LF: bytes as stored, the header's own blank line
    (BARE_LF, "BODY[HEADER.FIELDS (X-LONG)]", b"BODY[HEADER.FIELDS (X-LONG)] " + lit(b"X-Long: a\n b\n\n")),
    (BARE_LF, "BODY[TEXT]", b"BODY[TEXT] " + lit(b"line one\nline two\n")),
    (BARE_LF, "BODY[1]", b"BODY[1] " + lit(b"line one\nline two\n")),
    # a header without a body or blank line: no blank line added
    (HEADER_ONLY, "BODY[HEADER.FIELDS (SUBJECT)]", b"BODY[HEADER.FIELDS (SUBJECT)] " + lit(HEADER_ONLY)),
    (HEADER_ONLY, "BODY[TEXT]", b'BODY[TEXT] ""'),
    # broken MIME
    (LOST_BOUNDARY, "BODY[1]", b'BODY[1] ""'),
    (NO_BOUNDARY, "BODY[1]", b"BODY[1] " + lit(b"hello\r\n")),
    # 8-bit data is a literal even when UTF-8 is enabled
    (UTF8_HEADERS, "BODY[HEADER.FIELDS (SUBJECT)]", b"BODY[HEADER.FIELDS (SUBJECT)] " + lit("Subject: Grüße\r\n\r\n")),
]


@pytest.mark.parametrize("raw, text, expected", SECTIONS)
def test_body_section(raw, text, expected):
    assert fetch(message_of(raw), text) == expected


def test_8bit_section_is_a_literal_under_utf8():
    got = fetch(message_of(UTF8_HEADERS), "BODY[HEADER.FIELDS (SUBJECT)]<0.15>", utf8=True)
    assert got == b"BODY[HEADER.FIELDS (SUBJECT)]<0> " + lit("Subject: Grüß")


def test_field_names_are_echoed_as_astrings():
    got = fetch(message_of(PLAIN), 'BODY[HEADER.FIELDS ("Subject" {4}\r\nDate)]')
    assert got == b"BODY[HEADER.FIELDS (Subject Date)] " + lit(
        b"Date: Mon, 1 Jul 2024 09:00:00 +0200\r\nSubject: Lunch?\r\n\r\n"
    )


# --- A message with a prefix ------------------------------------------------------------------

PREFIXED_SECTIONS = [
    ("BODY[]", b"BODY[] " + lit(PREFIX + PLAIN)),
    ("BODY[HEADER]", b"BODY[HEADER] " + lit(PREFIX + PLAIN_HEADER)),
    ("BODY[TEXT]", b"BODY[TEXT] " + lit(PLAIN_TEXT)),
    ("BODY[1]", b"BODY[1] " + lit(PLAIN_TEXT)),
    ("BODY[]<0.11>", b'BODY[]<0> "Return-Path"'),
    ("BODY[TEXT]<0.3>", b'BODY[TEXT]<0> "Are"'),
    (
        "BODY[HEADER.FIELDS (delivered-to subject)]",
        b"BODY[HEADER.FIELDS (delivered-to subject)] "
        + lit(b"Delivered-To: alice@example.test\r\nSubject: Lunch?\r\n\r\n"),
    ),
    ("RFC822.SIZE", b"RFC822.SIZE %d" % (len(PREFIX) + len(PLAIN))),
    ("BINARY.SIZE[]", b"BINARY.SIZE[] %d" % (len(PREFIX) + len(PLAIN))),
    ("BINARY[1]", b"BINARY[1] " + lit(PLAIN_TEXT)),
    ("BODYSTRUCTURE", b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 24 2 NIL NIL NIL NIL)'),
]


@pytest.mark.parametrize("text, expected", PREFIXED_SECTIONS)
def test_prefix_is_part_of_the_top_header(text, expected):
    assert fetch(message_of(PLAIN, prefix=PREFIX), text) == expected


def test_prefixed_multipart_parts_shift():
    message = message_of(NESTED, prefix=PREFIX)
    assert fetch(message, "(BODY[2.2] BODY[2.2.MIME] BODY[1]<4.5>)") == (
        b'BODY[2.2] "<b>html</b>" BODY[2.2.MIME] ' + lit(b"Content-Type: text/html\r\n\r\n")
        + b' BODY[1]<4> "below"'
    )


def test_header_only_items_need_just_the_header():
    message = message_of(PLAIN, prefix=PREFIX)
    wanted = items("(UID BODY.PEEK[HEADER.FIELDS (Subject)] RFC822.HEADER BODY.PEEK[HEADER])")
    assert header_only(wanted)
    raw = PREFIX + PLAIN[: message.blob.header_size]
    assert render(wanted, message=message, flags=[], modseq=1, raw=raw) == (
        b"UID 7 BODY[HEADER.FIELDS (Subject)] " + lit(b"Subject: Lunch?\r\n\r\n")
        + b" RFC822.HEADER " + lit(PREFIX + PLAIN_HEADER)
        + b" BODY[HEADER] " + lit(PREFIX + PLAIN_HEADER)
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(FLAGS ENVELOPE)", True),
        ("BODY.PEEK[HEADER]", True),
        ("(BODY.PEEK[HEADER.FIELDS.NOT (X)] RFC822.HEADER)", True),
        ("BODY.PEEK[1.HEADER]", False),
        ("BODY.PEEK[HEADER]<0.10>", True),
        ("BODY.PEEK[TEXT]", False),
        ("BODY[]", False),
        ("RFC822", False),
        ("BINARY.SIZE[1]", False),
        ("(BODY.PEEK[HEADER] BINARY.PEEK[])", False),
    ],
)
def test_header_only(text, expected):
    assert header_only(items(text)) is expected


# --- BINARY (RFC 3516) ------------------------------------------------------------------------

BINARIES = [
    (ALTERNATIVE, "BINARY[1]", b"BINARY[1] " + lit("Café au lait")),
    (ALTERNATIVE, "BINARY.PEEK[2]", b"BINARY[2] " + lit("<p>Café</p>")),
    (ALTERNATIVE, "BINARY[2]<3.4>", b"BINARY[2]<3> " + lit("Caf\xc3".encode("latin-1"))),
    (ALTERNATIVE, "BINARY[2]<0.3>", b'BINARY[2]<0> "<p>"'),
    (ALTERNATIVE, "BINARY[2]<99.3>", b'BINARY[2]<99> ""'),
    (ALTERNATIVE, "BINARY.SIZE[1]", b"BINARY.SIZE[1] 13"),
    (ALTERNATIVE, "BINARY.SIZE[2]", b"BINARY.SIZE[2] 12"),
    (ALTERNATIVE, "BINARY.SIZE[3]", b"BINARY.SIZE[3] 0"),
    (ALTERNATIVE, "BINARY[3]", b'BINARY[3] ""'),
    # NUL in the decoded data: literal8
    (MIXED, "BINARY[2]", b"BINARY[2] ~{13}\r\n%PDF-1.4\n\x00\x01\x02\x03"),
    (MIXED, "BINARY[2]<0.8>", b'BINARY[2]<0> "%PDF-1.4"'),
    (MIXED, "BINARY.SIZE[2]", b"BINARY.SIZE[2] 13"),
    (MIXED, "BINARY[1]", b'BINARY[1] "See attached."'),
    # identity encodings and embedded messages are sent as they are
    (NESTED, "BINARY[2]", b"BINARY[2] " + lit(EMBEDDED)),
    (NESTED, "BINARY[2.2]", b'BINARY[2.2] "<b>html</b>"'),
    (PLAIN, "BINARY[]", b"BINARY[] " + lit(PLAIN)),
    (PLAIN, "BINARY[1]", b"BINARY[1] " + lit(PLAIN_TEXT)),
    # binary content: literal8 for BINARY; BODY cannot send NUL in a literal
    (BINARY_BODY, "BINARY[1]", b"BINARY[1] ~{3}\r\na\x00b"),
    (BINARY_BODY, "BINARY[1]<2.1>", b'BINARY[1]<2> "b"'),
    (BINARY_BODY, "BINARY.SIZE[1]", b"BINARY.SIZE[1] 3"),
    (BINARY_BODY, "BODY[1]", b"BODY[1] {3}\r\na\x80b"),
    (BINARY_BODY, "BODY[1]<1.1>", b"BODY[1]<1> {1}\r\n\x80"),
]


@pytest.mark.parametrize("raw, text, expected", BINARIES)
def test_binary(raw, text, expected):
    assert fetch(message_of(raw), text) == expected


@pytest.mark.parametrize("text", ["BINARY[1]", "BINARY.PEEK[1]<0.5>", "BINARY.SIZE[1]"])
def test_binary_of_an_unknown_encoding_is_refused(text):
    with pytest.raises(UnknownTransferEncoding) as caught:
        fetch(message_of(UUENCODED), text)
    assert (caught.value.status, caught.value.code, caught.value.encoding) == ("NO", "UNKNOWN-CTE", "x-uuencode")
    # BODY[] still serves the undecoded bytes
    assert fetch(message_of(UUENCODED), "BODY[1]") == b"BODY[1] " + lit(b"begin 644 x\r\n")


def test_lenient_base64():
    raw = crlf("Subject: x\nContent-Transfer-Encoding: base64\n\naGVs\nbG8*\n=\n")
    assert fetch(message_of(raw), "BINARY[1]") == b'BINARY[1] "hello"'


# --- Simple attributes ------------------------------------------------------------------------


def test_simple_attributes():
    message = message_of(UTF8_HEADERS, uid=42)
    got = fetch(
        message,
        "(FLAGS INTERNALDATE RFC822.SIZE MODSEQ UID PREVIEW THREADID)",
        flags=["\\Seen", "\\Flagged", "$Junk"],
        modseq=99,
    )
    assert got == (
        b'FLAGS (\\Seen \\Flagged $Junk) INTERNALDATE "01-Jul-2024 09:05:03 +0000"'
        b' RFC822.SIZE %d MODSEQ (99) UID 42 PREVIEW "hi" THREADID (%s)' % (len(UTF8_HEADERS), thread_id(message).encode())
    )


def test_flags_empty():
    assert fetch(message_of(PLAIN), "FLAGS") == b"FLAGS ()"


def test_preview():
    assert fetch(message_of(ALTERNATIVE), "PREVIEW") == b"PREVIEW " + lit("Café au lait")
    assert fetch(message_of(ALTERNATIVE), "PREVIEW (LAZY)", utf8=True) == 'PREVIEW "Café au lait"'.encode()
    assert fetch(message_of(MIXED), "PREVIEW") == b'PREVIEW "See attached."'
    assert fetch(message_of(HEADER_ONLY), "PREVIEW") == b"PREVIEW NIL"


@pytest.mark.parametrize(
    "value, expected",
    [
        (datetime(2024, 7, 1, 9, 5, 3, tzinfo=timezone.utc), "01-Jul-2024 09:05:03 +0000"),
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=2))), "31-Dec-1999 23:59:59 +0200"),
        (datetime(2024, 2, 9, 0, 0, 0, tzinfo=timezone(-timedelta(hours=3, minutes=30))), "09-Feb-2024 00:00:00 -0330"),
        (datetime(2024, 5, 5, 1, 2, 3), "05-May-2024 01:02:03 +0000"),
    ],
)
def test_internaldate_format(value, expected):
    assert format_internaldate(value) == expected


def test_emailid():
    plain = message_of(PLAIN)
    assert email_id(plain) == "M" + hashlib.sha256(PLAIN).hexdigest()[:24]
    assert fetch(plain, "EMAILID") == b"EMAILID (%s)" % email_id(plain).encode()
    prefixed = message_of(PLAIN, prefix=PREFIX)
    other = message_of(PLAIN, prefix=PREFIX.replace(b"alice", b"bob__"))
    assert re.fullmatch(r"M[0-9a-f]{24}", email_id(prefixed))
    assert len({email_id(plain), email_id(prefixed), email_id(other)}) == 3
    assert email_id(message_of(PLAIN, prefix=PREFIX, uid=8)) == email_id(prefixed)  # a copy keeps it


# --- Order, duplicates, UID -------------------------------------------------------------------


def test_items_in_the_order_asked_each_once():
    message = message_of(PLAIN)
    got = fetch(
        message,
        "(RFC822.SIZE FLAGS BODY.PEEK[1] BODY[1] RFC822.SIZE BODY[1]<0.3> UID)",
        uid=True,
    )
    assert got == (
        b"RFC822.SIZE %d FLAGS () BODY[1] " % len(PLAIN) + lit(PLAIN_TEXT) + b' BODY[1]<0> "Are" UID 7'
    )


def test_uid_fetch_puts_uid_first():
    message = message_of(PLAIN)
    assert fetch(message, "FLAGS", uid=True) == b"UID 7 FLAGS ()"
    assert fetch(message, "FLAGS", uid=False) == b"FLAGS ()"
    assert fetch(message, "(FLAGS UID)", uid=False) == b"FLAGS () UID 7"


def test_macros():
    message = message_of(PLAIN)
    assert fetch(message, "FAST") == b'FLAGS () INTERNALDATE "01-Jul-2024 09:05:03 +0000" RFC822.SIZE %d' % len(PLAIN)
    assert fetch(message, "FULL").endswith(b'BODY ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 24 2)')


def test_bytes_are_required_when_needed():
    with pytest.raises(ValueError):
        render(items("BODY[]"), message=message_of(PLAIN), flags=[], modseq=1, raw=None)


@pytest.mark.parametrize(
    "text, bytes_, seen",
    [
        ("(FLAGS UID ENVELOPE BODYSTRUCTURE BODY INTERNALDATE RFC822.SIZE MODSEQ)", False, False),
        ("(PREVIEW EMAILID THREADID)", False, False),
        ("BODY[]", True, True),
        ("BODY.PEEK[]", True, False),
        ("BODY[HEADER]", True, True),
        ("BODY.PEEK[1.MIME]<0.10>", True, False),
        ("RFC822", True, True),
        ("RFC822.HEADER", True, False),
        ("RFC822.TEXT", True, True),
        ("BINARY[1]", True, True),
        ("BINARY.PEEK[1]", True, False),
        ("BINARY.SIZE[1]", True, False),
        ("(FLAGS BODY.PEEK[TEXT] BODY[2])", True, True),
    ],
)
def test_needs_bytes_and_sets_seen(text, bytes_, seen):
    assert needs_bytes(items(text)) is bytes_
    assert sets_seen(items(text)) is seen


# --- Cross-check with Python's email package ---------------------------------------------------

_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|~?\{(\d+)\}\r\n|([^\s()"]+))', re.DOTALL)


def read_sexp(data):
    """An IMAP response value as nested lists of str/int/None (test-side reader)."""

    def value(pos):
        match = _TOKEN.match(data, pos)
        assert match, data[pos:]
        opening, closing, quoted_, size, atom = match.groups()
        pos = match.end()
        if opening:
            out = []
            while not re.match(rb"\s*\)", data[pos:]):
                item, pos = value(pos)
                out.append(item)
            return out, _TOKEN.match(data, pos).end()
        if quoted_ is not None:
            return re.sub(rb"\\(.)", rb"\1", quoted_).decode("utf-8"), pos
        if size is not None:
            end = pos + int(size)
            return data[pos:end].decode("utf-8", "surrogateescape"), end
        if atom == b"NIL":
            return None, pos
        return (int(atom) if atom.isdigit() else atom.decode()), pos

    result, end = value(0)
    assert end == len(data)
    return result


def ours(structure):
    """(type/subtype, size, params, children or nested) of a BODYSTRUCTURE value."""
    if isinstance(structure[0], list):
        index = next(i for i, item in enumerate(structure) if not isinstance(item, list))
        children = [ours(child) for child in structure[:index]]
        params = dict(zip(structure[index + 1][::2], structure[index + 1][1::2]))
        return (f"multipart/{structure[index]}".lower(), None, {k.lower(): v for k, v in params.items()}, children)
    type_, subtype, params = structure[0], structure[1], structure[2] or []
    params = {k.lower(): v for k, v in zip(params[::2], params[1::2])}
    kind = f"{type_}/{subtype}".lower()
    if kind == "message/rfc822":
        return kind, None, params, [ours(structure[8])]
    return kind, structure[6], params, []


@pytest.mark.parametrize("name", ["plain", "alternative", "mixed", "nested", "bare-lf", "utf8-headers"])
def test_bodystructure_matches_the_email_package(name):
    raw = CORPUS[name]
    got = read_sexp(fetch(message_of(raw), "BODYSTRUCTURE")[len(b"BODYSTRUCTURE ") :])
    expected = theirs_tree(email.message_from_bytes(raw))
    assert ours(got) == expected


def theirs_tree(part):
    kind = part.get_content_type()
    params = {k.lower(): v for k, v in (part.get_params(header="content-type") or [])[1:]}
    if part.get_content_maintype() == "text":
        params.setdefault("charset", "us-ascii")
    if kind == "message/rfc822":
        # `email` re-serialises an embedded message rather than keep its bytes, so its
        # size is checked by the exact tables above, not here.
        [inner] = part.get_payload()
        return kind, None, params, [theirs_tree(inner)]
    if part.is_multipart():
        return kind, None, params, [theirs_tree(child) for child in part.get_payload()]
    return kind, len(part.get_payload(decode=False).encode("ascii", "surrogateescape")), params, []


# --- Whatever the bytes -----------------------------------------------------------------------

ALL_ITEMS = items(
    "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE MODSEQ EMAILID THREADID PREVIEW"
    " BODY[] BODY[HEADER] BODY[TEXT] BODY[HEADER.FIELDS (Subject From)] BODY[HEADER.FIELDS.NOT (Subject)]"
    " BODY[1] BODY[1.MIME] BODY[1.HEADER] BODY[1.TEXT] BODY[2] BODY[2.1] BODY[2.2.MIME] BODY[1.2.3]"
    " BODY[]<5.10> BINARY.SIZE[] BINARY.SIZE[1] BINARY[2] BINARY[1.1]<0.3> RFC822 RFC822.HEADER RFC822.TEXT)"
)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_item_renders_for_the_corpus(name):
    message = message_of(CORPUS[name], prefix=PREFIX)
    wanted = [item for item in ALL_ITEMS if name != "uuencoded" or "BINARY" not in type(item).__name__.upper()]
    assert render(wanted, message=message, flags=["\\Seen"], modseq=5, raw=PREFIX + CORPUS[name])


_MIME_PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain\r\n", b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n", b"Subject: x\r\n", b"\r\n", b"\n",
        b"Content-Transfer-Encoding: x-uuencode\r\n", b"--b\r\n", b"--b--\r\n", b"aGVsbG8=\r\n",
        b"=C3=A9\r\n", b"\x00", b"\xff", b" folded\r\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_MIME_PIECES, max_size=30), prefix=st.sampled_from([b"", PREFIX]))
def test_render_never_fails_on_hostile_mime(pieces, prefix):
    raw = b"".join(pieces)
    message = make(raw, prefix=prefix)
    wanted = [item for item in ALL_ITEMS if "BINARY" not in type(item).__name__.upper()]
    out = render(wanted, message=message, flags=[], modseq=1, raw=prefix + raw)
    assert out.startswith(b"UID 7 ")
    # the whole message is exactly its bytes (NUL aside, which no literal may hold)
    assert b" BODY[] " + string((prefix + raw).replace(b"\0", b"\x80")) + b" " in out
    for item in items("(BINARY[] BINARY[1] BINARY[2.1]<1.5> BINARY.SIZE[1] BINARY.SIZE[2])"):
        try:
            render([item], message=message, flags=[], modseq=1, raw=prefix + raw)
        except UnknownTransferEncoding:
            pass


# --- Through the mail store ---------------------------------------------------------------------


def test_it_renders_a_stored_message(alice):
    from mailstore import actions
    from tests.conftest import message_bytes

    actions.append(alice, "INBOX", NESTED, flags=["\\Seen"], internaldate=INTERNALDATE)
    stored = Message.objects.select_related("blob").get(folder__account=alice, folder__name="INBOX")
    assert bytes(stored.blob.summary.bodystructure) == BODYSTRUCTURES[3][2]  # rendered once, when stored
    raw = message_bytes(stored)
    got = render(
        items("(FLAGS BODY.PEEK[2.2] RFC822.SIZE BODYSTRUCTURE)"),
        message=stored, flags=stored.flags, modseq=stored.modseq, raw=raw,
    )
    assert got == (
        b'UID %d FLAGS (\\Seen) BODY[2.2] "<b>html</b>" RFC822.SIZE %d BODYSTRUCTURE '
        % (stored.uid, len(NESTED))
        + BODYSTRUCTURES[3][2]
    )


# --- responses.text_nstring ---------------------------------------------------------------------


@given(value=st.one_of(st.none(), st.text(max_size=1100), st.sampled_from(['a"b', "a\\b", "tab\there", "x" * 1025])))
@settings(max_examples=500)
def test_text_nstring_is_nstring(value):
    for utf8 in (False, True):
        assert text_nstring(value, utf8=utf8) == nstring(value, utf8=utf8)

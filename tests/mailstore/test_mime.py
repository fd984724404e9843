"""Tests for mailstore.mime: one parse at delivery feeds IMAP and webmail.

Structure tests compare a "shape" of the tree: for every node its media type and
the exact bytes raw[header_start:body_start] and raw[body_start:end].
"""
import json
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstore.mime import (
    MAX_ADDRESS_FIELD_CHARS,
    MAX_DEPTH,
    MAX_PARTS,
    PREVIEW_CHARS,
    SEARCH_TEXT_CHARS,
    decode_words,
    parse_message,
)

NIL = [None, None, None, None]  # end-of-group marker


def crlf(text):
    """A message written with "\\n" line ends, as the CRLF bytes delivered."""
    return text.replace("\n", "\r\n").encode("utf-8")


def shape(raw, node):
    out = {
        "type": f"{node['type']}/{node['subtype']}",
        "header": raw[node["header_start"] : node["body_start"]],
        "body": raw[node["body_start"] : node["end"]],
    }
    if "parts" in node:
        out["parts"] = [shape(raw, part) for part in node["parts"]]
    if "message" in node:
        out["message"] = shape(raw, node["message"]["structure"])
    return out


def part(type_, header, body, parts=None, message=None):
    out = {"type": type_, "header": header, "body": body}
    if parts is not None:
        out["parts"] = parts
    if message is not None:
        out["message"] = message
    return out


def nodes(node):
    yield node
    for child in node.get("parts", ()):
        yield from nodes(child)
    if "message" in node:
        yield from nodes(node["message"]["structure"])


# --- Whole messages ----------------------------------------------------------------


SIMPLE = crlf(
    """Return-Path: <alice@example.com>
From: Alice Example <Alice@Example.COM>
To: Bob <bob@example.org>
Subject: Lunch
 tomorrow?
Date: Tue, 1 Jul 2025 12:30:00 +0200
Message-ID: <lunch.1@example.com>
Content-Type: text/plain; charset=utf-8

Shall we meet at noon?
Alice
"""
)


def test_it_parses_a_simple_text_message():
    parsed = parse_message(SIMPLE)

    header, body = SIMPLE.split(b"\r\n\r\n", 1)
    assert parsed.header_size == len(header) + 4
    assert parsed.envelope == [
        "Tue, 1 Jul 2025 12:30:00 +0200",
        "Lunch tomorrow?",
        [["Alice Example", None, "Alice", "Example.COM"]],
        [["Alice Example", None, "Alice", "Example.COM"]],
        [["Alice Example", None, "Alice", "Example.COM"]],
        [["Bob", None, "bob", "example.org"]],
        None,
        None,
        None,
        "<lunch.1@example.com>",
    ]
    assert parsed.structure == {
        "type": "text",
        "subtype": "plain",
        "params": [["charset", "utf-8"]],
        "id": None,
        "description": None,
        "encoding": "7bit",
        "size": len(body),
        "lines": 2,
        "md5": None,
        "disposition": None,
        "language": None,
        "location": None,
        "header_start": 0,
        "body_start": parsed.header_size,
        "end": len(SIMPLE),
    }
    assert SIMPLE[parsed.header_size :] == b"Shall we meet at noon?\r\nAlice\r\n"
    assert parsed.date == datetime(2025, 7, 1, 10, 30, tzinfo=timezone.utc)
    assert parsed.subject == "Lunch tomorrow?"
    assert parsed.from_ == "Alice Example <Alice@Example.COM>"
    assert parsed.to == "Bob <bob@example.org>"
    assert (parsed.cc, parsed.bcc) == ("", "")
    assert parsed.from_address == "alice@example.com"
    assert parsed.message_id == "<lunch.1@example.com>"
    assert (parsed.in_reply_to, parsed.references) == ("", [])
    assert parsed.has_attachments is False
    assert parsed.preview == "Shall we meet at noon? Alice"
    assert parsed.search_text == "Shall we meet at noon?\nAlice\n"
    json.dumps([parsed.envelope, parsed.structure])


ALTERNATIVE = crlf(
    """From: alice@example.com
Subject: Agenda
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt-1"

This is a multi-part message in MIME format.
--alt-1
Content-Type: text/plain; charset=us-ascii

1. Budget
2. Hiring
--alt-1
Content-Type: text/html; charset=us-ascii

<p>1. Budget</p><p>2. Hiring</p>
--alt-1--
"""
)


def test_it_splits_multipart_alternative():
    parsed = parse_message(ALTERNATIVE)

    assert shape(ALTERNATIVE, parsed.structure) == part(
        "multipart/alternative",
        ALTERNATIVE[: ALTERNATIVE.index(b"This is")],
        ALTERNATIVE[ALTERNATIVE.index(b"This is") :],
        parts=[
            part("text/plain", b"Content-Type: text/plain; charset=us-ascii\r\n\r\n", b"1. Budget\r\n2. Hiring"),
            part(
                "text/html",
                b"Content-Type: text/html; charset=us-ascii\r\n\r\n",
                b"<p>1. Budget</p><p>2. Hiring</p>",
            ),
        ],
    )
    plain, html = parsed.structure["parts"]
    assert (plain["lines"], html["lines"]) == (2, 1)
    assert parsed.structure["lines"] is None
    assert parsed.preview == "1. Budget 2. Hiring"
    assert parsed.search_text == "1. Budget\n2. Hiring\n1. Budget\n2. Hiring"
    assert parsed.has_attachments is False


MIXED = crlf(
    """From: alice@example.com
Subject: Report
Content-Type: multipart/mixed;
 boundary="==mixed=="

--==mixed==
Content-Type: text/plain

See attached.

--==mixed==
Content-Type: application/pdf; name="q3.pdf"
Content-Transfer-Encoding: BASE64
Content-Disposition: attachment;
 filename="q3 report.pdf"; size=9
Content-ID: <q3@example.com>
Content-Description: Q3 numbers
Content-Language: en, de (German)
Content-Location: https://example.com/q3.pdf
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

JVBERi0xLjQK
JVBERi0xLjQK
--==mixed==--
trailing epilogue
"""
)


def test_it_reads_an_attachment_and_its_headers():
    parsed = parse_message(MIXED)

    text, pdf = parsed.structure["parts"]
    assert shape(MIXED, text) == part("text/plain", b"Content-Type: text/plain\r\n\r\n", b"See attached.\r\n")
    assert MIXED[pdf["body_start"] : pdf["end"]] == b"JVBERi0xLjQK\r\nJVBERi0xLjQK"
    assert MIXED[pdf["header_start"] :].startswith(b"Content-Type: application/pdf")
    assert MIXED[pdf["header_start"] : pdf["body_start"]].endswith(b"==\r\n\r\n")
    assert text["params"] == []  # a Content-Type without charset: no default added
    assert {key: pdf[key] for key in pdf if key not in ("header_start", "body_start", "end")} == {
        "type": "application",
        "subtype": "pdf",
        "params": [["name", "q3.pdf"]],
        "id": "<q3@example.com>",
        "description": "Q3 numbers",
        "encoding": "base64",
        "size": 26,
        "lines": None,
        "md5": "Q2hlY2sgSW50ZWdyaXR5IQ==",
        "disposition": ["attachment", [["filename", "q3 report.pdf"], ["size", "9"]]],
        "language": ["en", "de"],
        "location": "https://example.com/q3.pdf",
    }
    assert parsed.has_attachments is True
    assert parsed.preview == "See attached."
    assert parsed.search_text == "See attached.\n"


NESTED = crlf(
    """Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain

plain
--inner
Content-Type: text/html

<b>html</b>
--inner--

--outer
Content-Type: image/png
Content-Disposition: inline; filename=logo.png

PNG
--outer--
"""
)


def test_it_splits_a_multipart_inside_a_multipart():
    parsed = parse_message(NESTED)

    assert shape(NESTED, parsed.structure) == part(
        "multipart/mixed",
        b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n",
        NESTED[NESTED.index(b"--outer") :],
        parts=[
            part(
                "multipart/alternative",
                b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n',
                b"--inner\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
                b"--inner\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n--inner--\r\n",
                parts=[
                    part("text/plain", b"Content-Type: text/plain\r\n\r\n", b"plain"),
                    part("text/html", b"Content-Type: text/html\r\n\r\n", b"<b>html</b>"),
                ],
            ),
            part(
                "image/png",
                b"Content-Type: image/png\r\nContent-Disposition: inline; filename=logo.png\r\n\r\n",
                b"PNG",
            ),
        ],
    )
    # An inline image with a file name still counts as an attachment.
    assert parsed.has_attachments is True
    assert parsed.preview == "plain"


FORWARD = crlf(
    """From: bob@example.org
Subject: Fwd: Lunch
Content-Type: multipart/mixed; boundary="fwd"

--fwd
Content-Type: text/plain

Forwarding this.
--fwd
Content-Type: message/rfc822
Content-Disposition: attachment

From: Alice <alice@example.com>
To: bob@example.org
Subject: =?utf-8?q?Lunch_=E2=80=94_tomorrow?=
Date: Tue, 1 Jul 2025 12:30:00 +0200
Message-ID: <lunch.1@example.com>
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

Noon?
--inner--

--fwd--
"""
)


def test_it_parses_an_attached_message():
    parsed = parse_message(FORWARD)

    forwarded = parsed.structure["parts"][1]
    inner_raw = FORWARD[forwarded["body_start"] : forwarded["end"]]
    assert inner_raw.startswith(b"From: Alice") and inner_raw.endswith(b"--inner--\r\n")
    inner_header = inner_raw[: inner_raw.index(b"\r\n\r\n") + 4]
    assert forwarded["message"]["header_size"] == len(inner_header)
    assert forwarded["message"]["envelope"] == [
        "Tue, 1 Jul 2025 12:30:00 +0200",
        "=?utf-8?q?Lunch_=E2=80=94_tomorrow?=",
        [["Alice", None, "alice", "example.com"]],
        [["Alice", None, "alice", "example.com"]],
        [["Alice", None, "alice", "example.com"]],
        [[None, None, "bob", "example.org"]],
        None,
        None,
        None,
        "<lunch.1@example.com>",
    ]
    assert shape(FORWARD, forwarded) == part(
        "message/rfc822",
        b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n",
        inner_raw,
        message=part(
            "multipart/alternative",
            inner_header,
            b"--inner\r\nContent-Type: text/plain\r\n\r\nNoon?\r\n--inner--\r\n",
            parts=[part("text/plain", b"Content-Type: text/plain\r\n\r\n", b"Noon?")],
        ),
    )
    assert forwarded["lines"] == inner_raw.count(b"\n")
    assert forwarded["message"]["structure"]["header_start"] == forwarded["body_start"]
    assert parsed.has_attachments is True
    assert parsed.search_text == "Forwarding this.\nNoon?"


# --- Headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_subject, decoded",
    [
        ("=?UTF-8?B?SGVsbG8gd29ybGQ=?=", "Hello world"),
        ("=?ISO-8859-1?Q?Caf=E9_cr=E8me?=", "Café crème"),
        ("=?iso-8859-15?q?=A4uro?=", "€uro"),
        ("=?KOI8-R?B?8NLJ18XU?=", "Привет"),
        ("=?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=", "こんにちは"),
        ("=?gb2312?B?xOO6ww==?=", "你好"),
        ("Re: =?utf-8?q?caf=C3=A9?= time", "Re: café time"),
        # Whitespace between encoded words goes (RFC 2047 §6.2); a character split
        # across two words is joined before decoding.
        ("=?utf-8?q?=E2?=  =?utf-8?q?=82=AC?= =?utf-8?q?_rates?=", "€ rates"),
        ("=?iso-8859-1?q?caf=E9?= =?utf-8?q?_=E2=82=AC?=", "café €"),
        ("=?utf-8*en?q?hello?=", "hello"),  # RFC 2231 §5 language
        ("=?x-unknown?q?plain?=", "plain"),
        ("=?utf-8?b?!!*?=", ""),  # nothing decodable left
        ("50% =? off", "50% =? off"),
        ("", ""),
    ],
)
def test_it_decodes_encoded_words_but_keeps_them_in_the_envelope(raw_subject, decoded):
    parsed = parse_message(crlf(f"Subject: {raw_subject}\n\nbody\n"))

    assert parsed.subject == decoded
    assert parsed.envelope[1] == raw_subject


def test_it_reads_8bit_utf8_headers_and_replaces_invalid_bytes():
    raw = "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\n".encode() + b"x"
    latin1 = b"Subject: Gr\xfc\xdfe\r\n\r\nx"

    parsed = parse_message(raw)
    assert parsed.subject == parsed.envelope[1] == "Grüße"
    assert parsed.envelope[2] == [["Jörg", None, "jörg", "bücher.example"]]
    assert parsed.from_address == "jörg@bücher.example"
    assert parse_message(latin1).envelope[1] == "Gr\ufffd\ufffde"


@pytest.mark.parametrize(
    "value, envelope",
    [
        ("alice@example.com", [[None, None, "alice", "example.com"]]),
        ("Alice Example <alice@example.com>", [["Alice Example", None, "alice", "example.com"]]),
        ('"Example, Alice" <alice@example.com>', [["Example, Alice", None, "alice", "example.com"]]),
        ('"A \\"quoted\\" name" <a@example.com>', [['A "quoted" name', None, "a", "example.com"]]),
        ("alice@example.com (Alice Example)", [["Alice Example", None, "alice", "example.com"]]),
        ("Alice (work (main)) <alice@example.com>", [["Alice", None, "alice", "example.com"]]),
        ("John Q. Public <jqp@example.com>", [["John Q. Public", None, "jqp", "example.com"]]),
        ("=?utf-8?q?Al=C3=AFce?= <alice@example.com>", [["=?utf-8?q?Al=C3=AFce?=", None, "alice", "example.com"]]),
        ('"alice smith"@example.com', [[None, None, "alice smith", "example.com"]]),
        ("alice@[192.0.2.1]", [[None, None, "alice", "[192.0.2.1]"]]),
        ("alice @ example . com", [[None, None, "alice", "example.com"]]),
        (
            "<@relay1.example,@relay2.example:alice@example.com>",
            [[None, "@relay1.example,@relay2.example", "alice", "example.com"]],
        ),
        ("alice", [[None, None, "alice", ".MISSING-HOST-NAME."]]),
        ("Alice <alice@example.com", [["Alice", None, "alice", "example.com"]]),
        ("a@example.com, , b@example.com,", [[None, None, "a", "example.com"], [None, None, "b", "example.com"]]),
        ("a@example.com; b@example.com", [[None, None, "a", "example.com"], [None, None, "b", "example.com"]]),
        (
            "Friends: alice@example.com, Bob <bob@example.org>;, carol@example.net",
            [
                [None, None, "Friends", None],
                [None, None, "alice", "example.com"],
                ["Bob", None, "bob", "example.org"],
                NIL,
                [None, None, "carol", "example.net"],
            ],
        ),
        ("undisclosed-recipients:;", [[None, None, "undisclosed-recipients", None], NIL]),
        ("Open group: a@example.com", [[None, None, "Open group", None], [None, None, "a", "example.com"], NIL]),
        ("<>", None),
        ('"Name only" <>', None),
        ("", None),
        ("   ", None),
        ("(just a comment)", None),
    ],
)
def test_it_tokenizes_addresses_for_the_envelope(value, envelope):
    parsed = parse_message(crlf(f"To: {value}\n\n"))

    assert parsed.envelope[5] == envelope


@pytest.mark.parametrize(
    "value",
    ['"unterminated <a@b>', "Alice <<a@b>>", "a@b@c@d", ":;:;<>,,@@", "(unclosed <a@b>", "<@route-without-colon>, b@c", "\\"],
)
def test_it_never_fails_on_broken_addresses(value):
    parsed = parse_message(crlf(f"From: {value}\nTo: {value}\n\n"))

    json.dumps(parsed.envelope)
    assert isinstance(parsed.from_, str) and isinstance(parsed.from_address, str)


def test_it_defaults_sender_and_reply_to_to_from():
    parsed = parse_message(crlf("From: a@example.com\nSender: s@example.com\nReply-To:\n\n"))

    assert parsed.envelope[3] == [[None, None, "s", "example.com"]]
    assert parsed.envelope[4] == [[None, None, "a", "example.com"]]


def test_it_shows_decoded_address_lists():
    parsed = parse_message(
        crlf(
            'From: "=?utf-8?q?J=C3=B6rg?=" <Jorg@Example.com>\n'
            'To: "Example, Alice" <alice@example.com>, bob@example.org (Bob)\n'
            "Cc: Team: carol@example.net, dave@example.net;, undisclosed-recipients:;\n"
            "Bcc: eve\n\n"
        )
    )

    assert parsed.from_ == "Jörg <Jorg@Example.com>"
    assert parsed.from_address == "jorg@example.com"
    assert parsed.to == "Example, Alice <alice@example.com>, Bob <bob@example.org>"
    assert parsed.cc == "Team: carol@example.net, dave@example.net;, undisclosed-recipients:;"
    assert parsed.bcc == "eve"


def test_it_copes_with_missing_headers():
    for raw in (b"\r\njust a body\r\n", b"", b"no header at all", b"\n\n"):
        parsed = parse_message(raw)

        assert parsed.envelope == [None] * 10
        assert (parsed.structure["type"], parsed.structure["subtype"]) == ("text", "plain")
        assert parsed.structure["params"] == [["charset", "us-ascii"]]  # RFC 2045 §5.2
        assert parsed.date is None
        assert (parsed.subject, parsed.from_, parsed.from_address, parsed.message_id) == ("", "", "", "")


def test_it_takes_a_header_without_blank_line_as_all_header():
    raw = b"Subject: no body\r\nX-Other: y\r\n"
    parsed = parse_message(raw)

    assert parsed.header_size == len(raw)
    assert parsed.structure["size"] == 0
    assert parsed.structure["lines"] == 0
    assert parsed.subject == "no body"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Tue, 1 Jul 2025 12:30:00 +0200", datetime(2025, 7, 1, 10, 30, tzinfo=timezone.utc)),
        ("1 Jul 2025 12:30:00 -0000", datetime(2025, 7, 1, 12, 30, tzinfo=timezone.utc)),
        ("Tue, 1 Jul 25 12:30 EST", datetime(2025, 7, 1, 17, 30, tzinfo=timezone.utc)),
        ("Tue,\r\n 1 Jul 2025 12:30:00 GMT", datetime(2025, 7, 1, 12, 30, tzinfo=timezone.utc)),
        ("yesterday", None),
        ("Tue, 1 Jul 2025 12:30:00 +9999", None),
        ("Fri, 31 Dec 9999 23:00:00 -0100", None),  # past datetime.max in UTC
        ("", None),
    ],
)
def test_it_parses_dates_to_utc(value, expected):
    parsed = parse_message(f"Date: {value}\r\n\r\n".encode())

    assert parsed.date == expected


def test_it_normalises_message_ids():
    parsed = parse_message(
        crlf(
            "Message-ID:\n <abc@\n example.com>\n"
            "In-Reply-To: <parent@example.com> (Alice's message)\n"
            "References: <root@example.com>\n\t<mid@example.com> <parent@example.com>\n\n"
        )
    )

    assert parsed.message_id == "<abc@example.com>"
    assert parsed.envelope[9] == "<abc@ example.com>"  # unfolded, otherwise raw
    assert parsed.in_reply_to == "<parent@example.com>"
    assert parsed.references == ["<root@example.com>", "<mid@example.com>", "<parent@example.com>"]


# --- MIME parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "disposition, params",
    [
        (
            "attachment; filename*0*=utf-8''%E2%82%AC%20rates; filename*1=\" for 2024.pdf\"",
            [["filename", "€ rates for 2024.pdf"]],
        ),
        ("attachment; filename*=iso-8859-1'en'caf%E9.txt", [["filename", "café.txt"]]),
        ('attachment; filename="old.txt"; filename*=UTF-8\'\'%C3%BCber.txt', [["filename", "über.txt"]]),
        ('attachment; filename*1="b.txt"; filename*0="a"', [["filename", "ab.txt"]]),
        ("attachment; filename*0*=utf-8''%F0%9F; filename*1*=%98%80.txt", [["filename", "😀.txt"]]),
        ("attachment; filename*=%41%42", [["filename", "AB"]]),
        ('inline; NAME="a;b"; Size=3', [["name", "a;b"], ["size", "3"]]),
        ('attachment; filename="quo\\"ted.txt"', [["filename", 'quo"ted.txt']]),
        ("attachment; filename=\"unterminated.txt", [["filename", "unterminated.txt"]]),
        ("attachment; broken; =x; filename=ok", [["filename", "ok"]]),
    ],
)
def test_it_combines_rfc2231_parameters(disposition, params):
    parsed = parse_message(crlf(f"Content-Type: application/octet-stream\nContent-Disposition: {disposition}\n\nx"))

    assert parsed.structure["disposition"] == [disposition.split(";")[0], params]


@pytest.mark.parametrize(
    "content_type, media_type, params",
    [
        ("text/plain (Plain text); charset=us-ascii (Plain text)", "text/plain", [["charset", "us-ascii"]]),
        ('TEXT/HTML; CHARSET="UTF-8"; format=flowed', "text/html", [["charset", "UTF-8"], ["format", "flowed"]]),
        ("text/plain; title*0=\"part one \"; title*1=\"part two\"", "text/plain", [["title", "part one part two"]]),
        ("garbage", "text/plain", [["charset", "us-ascii"]]),
        ("/plain", "text/plain", [["charset", "us-ascii"]]),
        ("image/", "text/plain", [["charset", "us-ascii"]]),
    ],
)
def test_it_parses_content_types(content_type, media_type, params):
    parsed = parse_message(crlf(f"Content-Type: {content_type}\n\nx"))

    assert f"{parsed.structure['type']}/{parsed.structure['subtype']}" == media_type
    assert parsed.structure["params"] == params


# --- Boundaries and broken structure ------------------------------------------------------


def test_it_keeps_offsets_in_bare_lf_messages():
    raw = NESTED.replace(b"\r\n", b"\n")
    parsed = parse_message(raw)

    assert shape(raw, parsed.structure) == part(
        "multipart/mixed",
        b"Content-Type: multipart/mixed; boundary=outer\n\n",
        raw[raw.index(b"--outer") :],
        parts=[
            part(
                "multipart/alternative",
                b'Content-Type: multipart/alternative; boundary="inner"\n\n',
                b"--inner\nContent-Type: text/plain\n\nplain\n--inner\nContent-Type: text/html\n\n<b>html</b>\n--inner--\n",
                parts=[
                    part("text/plain", b"Content-Type: text/plain\n\n", b"plain"),
                    part("text/html", b"Content-Type: text/html\n\n", b"<b>html</b>"),
                ],
            ),
            part("image/png", b"Content-Type: image/png\nContent-Disposition: inline; filename=logo.png\n\n", b"PNG"),
        ],
    )


def test_it_lets_the_last_part_run_to_the_end_without_a_close_delimiter():
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n--b\nContent-Type: text/html\n\nlast\n")
    parsed = parse_message(raw)

    assert shape(raw, parsed.structure)["parts"] == [
        part("text/plain", b"\r\n", b"first"),
        part("text/html", b"Content-Type: text/html\r\n\r\n", b"last\r\n"),
    ]


@pytest.mark.parametrize(
    "body, bodies",
    [
        ("--b\n\none\n--b--\n", [b"one"]),  # no preamble
        ("--b\n--b\n\ntwo\n--b--", [b"", b"two"]),  # an empty part: no header, no body
        ("--b  \t\n\none\n--b-- \n", [b"one"]),  # transport padding
        ("--bb\n--b x\n x--b\n--b\n\none\n--b--", [b"one"]),  # look-alikes are content
        ("pre\n--b\n\none\n\n\n--b--\nepilogue\n--b\n\nignored\n", [b"one\r\n\r\n"]),
        ("no delimiter at all\n", []),
        ("--b--\n", []),
    ],
)
def test_it_finds_delimiters_only_where_rfc2046_puts_them(body, bodies):
    raw = crlf("Content-Type: multipart/mixed; boundary=b\n\n" + body)
    parsed = parse_message(raw)

    assert [raw[p["body_start"] : p["end"]] for p in parsed.structure["parts"]] == bodies


def test_it_shows_a_multipart_without_boundary_as_text():
    raw = crlf("Content-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n")
    parsed = parse_message(raw)

    assert (parsed.structure["type"], parsed.structure["subtype"]) == ("text", "plain")
    assert "parts" not in parsed.structure
    assert parsed.structure["lines"] == 4


def test_it_defaults_digest_parts_to_messages():
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n"
        "--d\n\nSubject: first\n\none\n"
        "--d\nContent-Type: text/plain\n\ntwo\n--d--\n"
    )
    parsed = parse_message(raw)

    first, second = parsed.structure["parts"]
    assert (first["type"], first["subtype"], first["params"]) == ("message", "rfc822", [])
    assert first["message"]["envelope"][1] == "first"
    assert shape(raw, first["message"]["structure"]) == part("text/plain", b"Subject: first\r\n\r\n", b"one")
    assert (second["type"], second["subtype"]) == ("text", "plain")


def test_it_keeps_an_encoded_message_opaque():
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeA0KDQp4\n--b--\n"
    )
    attached = parse_message(raw).structure["parts"][0]

    assert (attached["type"], attached["subtype"], attached["lines"]) == ("application", "octet-stream", None)
    assert "message" not in attached


def test_it_stops_nesting_at_max_depth():
    raw = b""
    for level in range(MAX_DEPTH + 10):
        raw += f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n".encode()
    raw += b"\r\ndeep\r\n"
    parsed = parse_message(raw)

    node, depth = parsed.structure, 0
    while "parts" in node:
        node, depth = node["parts"][0], depth + 1
    assert depth == MAX_DEPTH
    assert (node["type"], node["subtype"]) == ("application", "octet-stream")
    assert raw[node["body_start"] : node["end"]].endswith(b"deep\r\n")


def test_it_stops_nesting_messages_at_max_depth():
    raw = b"Content-Type: message/rfc822\r\n\r\n" * (MAX_DEPTH + 10) + b"Subject: deep\r\n\r\nx"
    parsed = parse_message(raw)

    node, depth = parsed.structure, 0
    while "message" in node:
        node, depth = node["message"]["structure"], depth + 1
    assert depth == MAX_DEPTH
    assert (node["type"], node["subtype"]) == ("application", "octet-stream")


def test_it_stops_adding_parts_at_max_parts():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * (MAX_PARTS + 500) + b"--b--\r\n"
    started = time.perf_counter()
    parsed = parse_message(raw)

    assert time.perf_counter() - started < 5
    assert len(parsed.structure["parts"]) == MAX_PARTS - 1  # the multipart itself is a node
    assert sum(1 for _ in nodes(parsed.structure)) == MAX_PARTS


# --- Text: preview, search text, attachments ---------------------------------------------


def test_it_previews_html_only_mail():
    raw = crlf(
        "Content-Type: text/html; charset=utf-8\n\n"
        "<html><head><title>Newsletter</title><style>p { color: red; }</style></head>\n"
        "<body><!-- tracking --><span style=\"display:none\">&zwnj;&nbsp;&zwnj;&nbsp;</span>\n"
        "<script>alert('x')</script><h1>Big&nbsp;news</h1><p>Fish &amp; chips &lt;today&gt;</p>\n"
        "<table><tr><td>cell one</td><td>cell two</td></tr></table><br>caf&#233; &euro;5</body></html>\n"
    )
    parsed = parse_message(raw)

    assert parsed.preview == "Big news Fish & chips <today> cell one cell two café €5"
    # Search text keeps invisible characters (a zero-width joiner can be part of
    # an emoji); only the preview drops the preheader padding.
    assert parsed.search_text == "\u200c \u200c\nBig news\nFish & chips <today>\ncell one\ncell two\ncafé €5"


def test_it_prefers_text_plain_for_the_preview_and_skips_attachments():
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename=a.txt\n\nattached\n"
        "--b\nContent-Type: text/html\n\n<p>html body</p>\n"
        "--b\nContent-Type: text/plain\n\n   \n"
        "--b\nContent-Type: text/plain\n\nplain body\n--b--\n"
    )
    parsed = parse_message(raw)

    assert parsed.preview == "plain body"
    assert parsed.search_text == "attached\nhtml body\n   \nplain body"
    assert parsed.has_attachments is True


@pytest.mark.parametrize(
    "headers, body, text",
    [
        (
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable",
            "Gr=C3=BC=C3=9Fe =E2=80=94 na=C3=AFve caf=C3=A9, a soft=\n break=3D ok",
            "Grüße — naïve café, a soft break= ok",
        ),
        (
            "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64",
            "R3L832UgYXVz\nIEv2bG4=",
            "Grüße aus Köln",
        ),
        (
            "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64",
            "PHA+SGkgJmFtcDsgYnllPC9wPg",  # "<p>Hi &amp; bye</p>", padding lost
            "Hi & bye",
        ),
        ("Content-Type: text/plain; charset=no-such-charset", "plain ascii", "plain ascii"),
        ("Content-Type: text/plain; charset=base64", "not a text codec", "not a text codec"),
        ("Content-Type: text/plain; charset=unicode-escape", "\\u0041", "\\u0041"),  # no mail charset
        ("Content-Type: text/plain; charset=iso-8859-1", "caf\xe9 \x80", "café €"),  # read as windows-1252
        ("Content-Type: text/plain; charset=utf-16-le", "a\x00b\x00\x00\x00", "ab\ufffd"),  # NUL replaced
        ("Content-Type: text/plain; charset=utf-7", "+2D3-", "\ufffd"),  # lone surrogate replaced
    ],
)
def test_it_decodes_text_for_preview_and_search(headers, body, text):
    raw = crlf(headers + "\n\n") + body.replace("\n", "\r\n").encode("latin-1")
    parsed = parse_message(raw)

    assert parsed.search_text == text
    assert parsed.preview == " ".join(text.split())


def test_it_refuses_python_codecs_that_are_no_charset():
    # Python's punycode decoder takes quadratic time: this body would take minutes.
    raw = b"Content-Type: text/plain; charset=punycode\r\n\r\n" + b"abc" * 100_000 + b"-" + b"a1b2" * 100_000
    started = time.perf_counter()
    parsed = parse_message(raw)

    assert time.perf_counter() - started < 3
    assert parsed.preview.startswith("abcabc")


def test_it_caps_preview_and_search_text():
    word = "lorem\r\n\tipsum "
    raw = b"Content-Type: text/plain\r\n\r\n" + (word * (SEARCH_TEXT_CHARS // 4)).encode()
    parsed = parse_message(raw)

    assert len(parsed.preview) == PREVIEW_CHARS
    assert parsed.preview.startswith("lorem ipsum lorem ipsum")
    assert len(parsed.search_text) == SEARCH_TEXT_CHARS


@pytest.mark.parametrize(
    "part_headers, has_attachments",
    [
        ("Content-Type: text/plain", False),
        ("Content-Type: text/plain\nContent-Disposition: inline; filename=notes.txt", False),
        ("Content-Type: text/plain\nContent-Disposition: attachment", True),
        ("Content-Type: application/pdf; name=x.pdf", True),
        ("Content-Type: image/png\nContent-Disposition: inline; filename*=utf-8''a.png", True),
        ("Content-Type: image/png", False),
    ],
)
def test_it_detects_attachments(part_headers, has_attachments):
    raw = crlf(f"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nbody\n--b\n{part_headers}\n\nx\n--b--\n")

    assert parse_message(raw).has_attachments is has_attachments


# --- Size and speed ------------------------------------------------------------------------


def test_it_parses_25_megabytes_quickly():
    attachment = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    raw = (
        crlf("From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n")
        + b"--b\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + attachment * (25 * 1024 * 1024 // len(attachment))
        + b"--b--\r\n"
    )
    text = b"Content-Type: text/plain\r\n\r\n" + b"plain text line of a long body\r\n" * (25 * 1024 * 1024 // 32)

    for message in (raw, text):
        started = time.perf_counter()
        parsed = parse_message(message)
        # Well under a second on a laptop; loose for slow CI machines.
        assert time.perf_counter() - started < 3
    assert len(parsed.search_text) == SEARCH_TEXT_CHARS


def test_it_bounds_header_work_on_hostile_input():
    recipient = b"r@example.com, "
    raw = (
        b"From: a@example.com\r\nTo: "
        + recipient * 200_000
        + b"\r\n"
        + b"X-Junk: y\r\n" * 1_000_000
        + b"Subject: beyond the header budget\r\n\r\nbody"
    )
    started = time.perf_counter()
    parsed = parse_message(raw)

    assert time.perf_counter() - started < 3
    assert parsed.header_size == len(raw) - len(b"body")
    assert parsed.envelope[2] == [[None, None, "a", "example.com"]]
    # To is read up to MAX_ADDRESS_FIELD_CHARS; the address cut there is kept as it is.
    to = parsed.envelope[5]
    assert len(to) == MAX_ADDRESS_FIELD_CHARS // len(recipient) + 1
    assert to[-2] == [None, None, "r", "example.com"]
    assert parsed.subject == ""


# --- Fuzzing -------------------------------------------------------------------------------


def assert_well_formed(raw, parsed):
    """The invariants every result holds, whatever the input."""
    json.dumps([parsed.envelope, parsed.structure, parsed.references])
    top = parsed.structure
    assert (top["header_start"], top["body_start"], top["end"]) == (0, parsed.header_size, len(raw))
    assert_node(raw, top)
    assert len(parsed.preview) <= PREVIEW_CHARS
    assert len(parsed.search_text) <= SEARCH_TEXT_CHARS
    assert parsed.date is None or parsed.date.utcoffset().total_seconds() == 0
    for text in (parsed.subject, parsed.from_, parsed.to, parsed.preview, parsed.search_text):
        text.encode("utf-8")  # no lone surrogates
        assert "\0" not in text


def assert_node(raw, node):
    assert 0 <= node["header_start"] <= node["body_start"] <= node["end"] <= len(raw)
    body = raw[node["body_start"] : node["end"]]
    assert node["size"] == len(body)
    if node["type"] == "text" or "message" in node:
        assert node["lines"] == body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
    else:
        assert node["lines"] is None
    previous_end = node["body_start"]
    for child in node.get("parts", ()):
        assert previous_end <= child["header_start"] and child["end"] <= node["end"]
        previous_end = child["end"]
        assert_node(raw, child)
    if "message" in node:
        inner = node["message"]["structure"]
        assert (inner["header_start"], inner["end"]) == (node["body_start"], node["end"])
        assert node["message"]["header_size"] == inner["body_start"] - inner["header_start"]
        assert_node(raw, inner)


CORPUS = [SIMPLE, ALTERNATIVE, MIXED, NESTED, FORWARD, NESTED.replace(b"\r\n", b"\n")]
INTERESTING = [
    b"\r\n", b"\n", b"\r\n\r\n", b"--", b"--outer", b"--inner--", b"--fwd\r\n", b":", b";", b'"', b"(", b")",
    b"<", b">", b"@", b",", b"=?utf-8?b?", b"?=", b"*0*=", b"'", b"%", b"\x00", b"\xff", b" ", b"\t",
    b"Content-Type: multipart/mixed; boundary=x\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"charset=utf-7", b"<script", b"<!--", b"&#",
]

mutation = st.tuples(
    st.sampled_from(["insert", "delete", "replace"]),
    st.floats(min_value=0, max_value=1),
    st.one_of(st.sampled_from(INTERESTING), st.binary(max_size=8)),
)


def mutate(raw, mutations):
    for operation, where, payload in mutations:
        pos = int(where * len(raw))
        if operation == "insert":
            raw = raw[:pos] + payload + raw[pos:]
        elif operation == "delete":
            raw = raw[:pos] + raw[pos + len(payload) + 1 :]
        else:
            raw = raw[:pos] + payload + raw[pos + len(payload) :]
    return raw


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_arbitrary_bytes(raw):
    assert_well_formed(raw, parse_message(raw))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.lists(mutation, max_size=12))
def test_fuzz_mutated_messages(raw, mutations):
    raw = mutate(raw, mutations)
    assert_well_formed(raw, parse_message(raw))


# Valid generated trees must come back byte for byte. Content is drawn from an
# alphabet without "-", so no body line can be taken for a delimiter.
content = st.text(alphabet="abc XYZ=:;\"<>@\n", max_size=40)
leaf = st.tuples(
    st.just("leaf"),
    st.sampled_from(["text/plain", "text/html", "application/pdf", "image/png"]),
    st.booleans(),  # with a header, or only the blank line
    content,
)


def trees(children):
    multipart = st.tuples(
        st.just("multipart"),
        st.sampled_from(["mixed", "alternative", "related"]),
        st.lists(children, min_size=1, max_size=4),
        content,  # preamble
        content,  # epilogue
        st.booleans(),  # close delimiter present
    )
    message = st.tuples(st.just("message"), children)
    return st.one_of(multipart, message)


tree = st.recursive(leaf, trees, max_leaves=12)


class Renderer:
    def __init__(self, newline):
        self.newline = newline
        self.boundaries = 0

    def line(self, text):
        return text.encode() + self.newline

    def lines(self, text):
        return text.replace("\n", "\r\n" if self.newline == b"\r\n" else "\n").encode()

    def render(self, node, extra_header=b""):
        """(raw bytes, expected shape) of a node whose header starts with extra_header."""
        kind = node[0]
        if kind == "leaf":
            _, media_type, with_header, body = node
            header = extra_header + (self.line(f"Content-Type: {media_type}") if with_header else b"")
            header += self.newline
            body = self.lines(body)
            return header + body, part(media_type if with_header else "text/plain", header, body)
        if kind == "message":
            inner_raw, inner_shape = self.render(node[1], self.line("Subject: inner"))
            header = extra_header + self.line("Content-Type: message/rfc822") + self.newline
            return header + inner_raw, part("message/rfc822", header, inner_raw, message=inner_shape)
        _, subtype, children, preamble, epilogue, closed = node
        if children[-1][0] != "leaf":
            closed = True  # an unclosed last part would end inside a nested tree: keep it simple
        self.boundaries += 1
        boundary = f"b{self.boundaries}"
        header = extra_header + self.line(f'Content-Type: multipart/{subtype}; boundary="{boundary}"') + self.newline
        body = self.lines(preamble) + (self.newline if preamble else b"")
        shapes = []
        for child in children:
            child_raw, child_shape = self.render(child)
            body += self.line(f"--{boundary}") + child_raw + self.newline
            shapes.append(child_shape)
        if closed:
            body += self.line(f"--{boundary}--") + self.lines(epilogue)
        else:
            # The last part then runs to the end, taking the final line break.
            shapes[-1] = dict(shapes[-1], body=shapes[-1]["body"] + self.newline)
        return header + body, part(f"multipart/{subtype}", header, body, parts=shapes)


@settings(max_examples=300, deadline=None)
@given(tree, st.sampled_from([b"\r\n", b"\n"]))
def test_fuzz_generated_trees_come_back_byte_for_byte(node, newline):
    renderer = Renderer(newline)
    raw, expected = renderer.render(node, renderer.line("From: a@example.com"))
    parsed = parse_message(raw)

    assert_well_formed(raw, parsed)
    assert shape(raw, parsed.structure) == expected


def test_decode_words_is_public_for_display_code():
    assert decode_words("=?utf-8?q?caf=C3=A9?=") == "café"

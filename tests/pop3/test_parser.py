"""The pure layer: command parsing (tables and fuzzing) and reply serialising."""
import base64

import pytest
from hypothesis import given, settings, strategies as st

from pop3 import responses
from pop3.parser import (
    CANCELLED,
    KEYWORDS,
    MAX_COMMAND_OCTETS,
    Command,
    ParseError,
    parse_command,
    parse_sasl_line,
)

DIGEST = "c4c9334bac560ecc979e58001b3e22fb"


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"STAT\r\n", Command("STAT")),
        (b"stat", Command("STAT")),
        (b"StAt\n", Command("STAT")),
        (b"CAPA\r\n", Command("CAPA")),
        (b"STLS", Command("STLS")),
        (b"UTF8", Command("UTF8")),
        (b"QUIT", Command("QUIT")),
        (b"NOOP", Command("NOOP")),
        (b"RSET", Command("RSET")),
        (b"LIST", Command("LIST")),
        (b"LIST 2", Command("LIST", (2,))),
        (b"LIST  2 ", Command("LIST", (2,))),
        (b"UIDL", Command("UIDL")),
        (b"UIDL 10", Command("UIDL", (10,))),
        (b"RETR 1", Command("RETR", (1,))),
        (b"RETR 0", Command("RETR", (0,))),  # a number; the session says there is no message 0
        (b"DELE 0000000007", Command("DELE", (7,))),
        (b"TOP 1 0", Command("TOP", (1, 0))),
        (b"TOP 3 12", Command("TOP", (3, 12))),
        (b"USER alice@example.test", Command("USER", ("alice@example.test",))),
        (b"USER  alice@example.test ", Command("USER", ("alice@example.test",))),
        ("USER jörg@bücher.example".encode(), Command("USER", ("jörg@bücher.example",))),
        (b"PASS correct horse battery staple", Command("PASS", ("correct horse battery staple",))),
        (b"PASS  leading and trailing ", Command("PASS", (" leading and trailing ",))),
        ("PASS pässwörd".encode(), Command("PASS", ("pässwörd",))),
        (f"APOP mrose {DIGEST}".encode(), Command("APOP", ("mrose", DIGEST))),
        (f"APOP mrose {DIGEST.upper()}".encode(), Command("APOP", ("mrose", DIGEST))),
        (f"APOP name with space {DIGEST}".encode(), Command("APOP", ("name with space", DIGEST))),
        (b"AUTH PLAIN", Command("AUTH", ("PLAIN",))),
        (b"auth scram-sha-256", Command("AUTH", ("SCRAM-SHA-256",))),
        (b"AUTH PLAIN =", Command("AUTH", ("PLAIN", b""))),
        (b"AUTH PLAIN " + base64.b64encode(b"\0a\0b"), Command("AUTH", ("PLAIN", b"\0a\0b"))),
    ],
)
def test_it_parses_commands(line, expected):
    assert parse_command(line) == expected


@pytest.mark.parametrize(
    "line, message, unknown",
    [
        (b"", "Empty command", False),
        (b"\r\n", "Empty command", False),
        (b" STAT", "Empty command", False),
        (b"XYZZY", "Unknown command", True),
        (b"LAST", "Unknown command", True),  # RFC 1725's LAST is gone since RFC 1939
        (b"ST4T", "Unknown command", True),
        (b"\xff\xfe", "Invalid characters in command", False),
        (b"STAT\x00", "Invalid characters in command", False),
        (b"PASS a\tb", "Invalid characters in command", False),
        (b"STAT 1", "STAT takes no arguments", False),
        (b"QUIT now", "QUIT takes no arguments", False),
        (b"CAPA x", "CAPA takes no arguments", False),
        (b"STLS x", "STLS takes no arguments", False),
        (b"RETR", "RETR needs a message number", False),
        (b"RETR 1 2", "RETR needs a message number", False),
        (b"RETR one", "Invalid message number", False),
        (b"RETR -1", "Invalid message number", False),
        (b"RETR 12345678901", "Invalid message number", False),
        (b"DELE", "DELE needs a message number", False),
        (b"LIST 1 2", "LIST takes at most one message number", False),
        (b"UIDL x", "Invalid message number", False),
        (b"TOP 1", "TOP needs a message number and a number of lines", False),
        (b"TOP 1 -1", "Invalid number of lines", False),
        (b"USER", "Missing user name", False),
        (b"USER ", "Missing user name", False),
        (b"USER " + b"a" * 300, "User name too long", False),
        (b"USER \xff", "User name is not UTF-8", False),
        (b"PASS", "Missing password", False),
        (b"APOP mrose", "APOP needs a name and a 32-digit hex digest", False),
        (b"APOP mrose xyz", "APOP needs a name and a 32-digit hex digest", False),
        (f"APOP {DIGEST}".encode(), "Missing name", False),
        (b"AUTH", "AUTH needs a mechanism", False),
        (b"AUTH PLAIN a b", "AUTH takes a mechanism and at most an initial response", False),
        (b"AUTH PL@IN", "Invalid mechanism name", False),
        (b"AUTH PLAIN %%%", "Invalid base64 in initial response", False),
        (b"AUTH PLAIN QR==", "Invalid base64 in initial response", False),  # not canonical
        (b"AUTH PLAIN *", "Authentication cancelled", False),
        (b"LIST \xc3\xa4", "Invalid characters in command", False),
        (b"STAT " + b"x" * MAX_COMMAND_OCTETS, "Line too long", False),
    ],
)
def test_it_refuses_malformed_commands(line, message, unknown):
    with pytest.raises(ParseError) as refusal:
        parse_command(line)
    assert (refusal.value.message, refusal.value.unknown) == (message, unknown)


def test_the_repr_of_a_command_hides_secrets():
    assert "horse" not in repr(parse_command(b"PASS horse"))
    assert "AGEAYg" not in repr(parse_command(b"AUTH PLAIN AGEAYg=="))


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"AGEAYg==\r\n", b"\0a\0b"),
        (b"", b""),
        (b"*\r\n", CANCELLED),
    ],
)
def test_it_parses_sasl_continuation_lines(line, expected):
    assert parse_sasl_line(line) == expected


@pytest.mark.parametrize("line", [b"%%%", b"QR==", b"AGEA Yg==", b"A" * 9000])
def test_it_refuses_bad_sasl_lines(line):
    with pytest.raises(ParseError):
        parse_sasl_line(line)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_parse_command_raises_only_parse_error(line):
    try:
        command = parse_command(line)
    except ParseError as error:
        assert error.message.isascii() and len(error.message) < 100
    else:
        assert command.name in KEYWORDS


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(sorted(KEYWORDS)), st.binary(max_size=120))
def test_fuzz_known_keywords_with_any_arguments(keyword, rest):
    try:
        parse_command(keyword.encode() + b" " + rest)
    except ParseError:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_sasl_line_raises_only_parse_error(line):
    try:
        parse_sasl_line(line)
    except ParseError:
        pass


# --- Replies and message bytes -----------------------------------------------------------


def test_status_lines_carry_codes_and_stay_within_512_octets():
    assert responses.ok() == b"+OK\r\n"
    assert responses.ok("2 320") == b"+OK 2 320\r\n"
    assert responses.err("Maildrop is locked", "IN-USE") == b"-ERR [IN-USE] Maildrop is locked\r\n"
    assert len(responses.err("x" * 1000)) == 512


@pytest.mark.parametrize(
    "stored, sent",
    [
        (b"", b""),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n"),
        (b"a\n\nb", b"a\r\n\r\nb\r\n"),
        (b"a\rb\r\n", b"a\rb\r\n"),  # a lone CR is not a line end
        (b"a\r", b"a\r\r\n"),
        (b"\n", b"\r\n"),
    ],
)
def test_canonical_form_and_its_octets(stored, sent):
    assert responses.canonical(stored) == sent
    assert responses.octets(stored) == len(sent)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_octets_always_equal_the_canonical_length(head, tail):
    assert responses.octets(head + tail) == len(responses.canonical(head + tail))
    # A complete head (the MDA's trace prefix) counts separately from what follows it.
    head += b"\n"
    if tail:
        assert responses.line_end_octets(head) + responses.octets(tail) == len(responses.canonical(head + tail))


def test_dot_stuffing_of_lines_that_start_with_a_dot():
    message = b".first\r\nmiddle\r\n.\r\n..two\r\nend.\r\n"
    assert responses.dot_stuff(message) == b"..first\r\nmiddle\r\n..\r\n...two\r\nend.\r\n"
    assert responses.message_response(b"+OK\r\n", message).endswith(b"end.\r\n.\r\n")


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"", b".", b"..", b"a", b".b", b"c."]), max_size=8), st.binary(max_size=60))
def test_a_message_in_parts_is_stuffed_as_the_whole(prefix_lines, tail):
    # RETR sends the trace prefix and the stored bytes as two parts when both are canonical.
    prefix = b"".join(line + b"\r\n" for line in prefix_lines)
    body = responses.canonical(tail)
    assert responses.message_response(b"+OK\r\n", prefix, body) == responses.message_response(b"+OK\r\n", prefix + body)


def test_top_gives_the_header_the_blank_line_and_n_body_lines():
    message = b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\nthree\r\n"
    assert responses.top(message, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert responses.top(message, 2) == b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\n"
    assert responses.top(message, 99) == message
    assert responses.top(b"A: 1\r\nB: 2\r\n", 5) == b"A: 1\r\nB: 2\r\n"  # no body at all
    assert responses.top(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"  # no header at all


def test_multiline_listing_ends_with_a_dot():
    assert responses.multiline(b"+OK\r\n", ["1 120", "2 200"]) == b"+OK\r\n1 120\r\n2 200\r\n.\r\n"
    assert responses.multiline(b"+OK\r\n", []) == b"+OK\r\n.\r\n"

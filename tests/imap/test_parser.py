"""Tests for imap.parser: the pure IMAP command parser.

Pure tier: tables of command bytes and the value they parse to, error rows (message,
tag, code), the framing helper driven the way the I/O layer will drive it, modified
UTF-7 round trips, sequence-set resolution checked against brute force, and hypothesis
fuzzing that proves parse_command never raises anything but ParseError.
"""
import itertools
import re
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imap.parser import (
    COMMAND_NAMES,
    MAX_DEPTH,
    MAX_SEARCH_KEYS,
    All,
    And,
    Append,
    AppendMessage,
    Authenticate,
    Body,
    Capability,
    Check,
    Close,
    Compress,
    Copy,
    Create,
    Delete,
    EmailId,
    Enable,
    Expunge,
    Fetch,
    FetchAttribute,
    FetchBinary,
    FetchBinarySize,
    FetchBody,
    FetchPreview,
    Flag,
    GetQuota,
    GetQuotaRoot,
    Header,
    Id,
    Idle,
    InternalDate,
    Larger,
    List,
    Literal,
    LiteralTooBig,
    Login,
    Logout,
    Lsub,
    ModSeq,
    Move,
    Namespace,
    Noop,
    Not,
    Or,
    ParseError,
    Partial,
    QResync,
    Rename,
    Search,
    Section,
    Select,
    SentDate,
    SequenceKey,
    SequenceSet,
    SetQuota,
    Smaller,
    Sort,
    SortCriterion,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Text,
    Thread,
    ThreadId,
    UidKey,
    Unselect,
    Unsubscribe,
    decode_modified_utf7,
    encode_modified_utf7,
    is_idle_done,
    literal_announcement,
    parse_command,
    peek_tag,
)

T = "t1"
SEEN, FLAGGED, DELETED, DRAFT, RECENT = (
    Flag("\\Seen"), Flag("\\Flagged"), Flag("\\Deleted"), Flag("\\Draft"), Flag("\\Recent")
)
FAST = (FetchAttribute("FLAGS"), FetchAttribute("INTERNALDATE"), FetchAttribute("RFC822.SIZE"))
UTC = timezone.utc


def seq(text):
    return SequenceSet.parse(text)


def row(data, expected):
    return pytest.param(data, expected, id=data.decode("utf-8", "replace")[:60])


# --- Every command, valid forms -------------------------------------------------------

VALID = [
    # RFC 9051 §6.1, any state
    (b"t1 CAPABILITY\r\n", Capability(T)),
    (b"t1 noop", Noop(T)),
    (b"t1 LOGOUT\r\n", Logout(T)),
    (b"a.b]c~ LOGOUT\r\n", Logout("a.b]c~")),
    (b't1 ID ("name" "sodr" "version" NIL)', Id(T, (("name", "sodr"), ("version", None)))),
    (b"t1 ID NIL", Id(T, None)),
    (b"t1 ID ()", Id(T, ())),
    # §6.2, not authenticated
    (b"t1 STARTTLS\r\n", StartTLS(T)),
    (b"t1 AUTHENTICATE PLAIN", Authenticate(T, "PLAIN")),
    (b"t1 authenticate plain AGFsaWNlAHNlY3JldA==", Authenticate(T, "PLAIN", b"\x00alice\x00secret")),
    (b"t1 AUTHENTICATE EXTERNAL =", Authenticate(T, "EXTERNAL", b"")),
    (b"t1 AUTHENTICATE SCRAM-SHA-256", Authenticate(T, "SCRAM-SHA-256")),
    (b't1 LOGIN alice "pa ss\\"w\\\\rd"', Login(T, "alice", 'pa ss"w\\rd')),
    (b"t1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n", Login(T, "alice", "secret")),
    ('t1 LOGIN bob "pässword"'.encode(), Login(T, "bob", "pässword")),
    (b"t1 LOGIN a]b c", Login(T, "a]b", "c")),
    # §6.3, authenticated
    (b"t1 ENABLE CONDSTORE qresync UTF8=ACCEPT", Enable(T, ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT"))),
    (b"t1 SELECT inbox", Select(T, "INBOX")),
    (b't1 EXAMINE "Sent"', Select(T, "Sent", readonly=True)),
    (b"t1 SELECT INBOX (CONDSTORE)", Select(T, "INBOX", condstore=True)),
    (
        b"t1 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))",
        Select(T, "INBOX", qresync=QResync(67890007, 90060115194045000, seq("41:211,214:541"))),
    ),
    (
        b"t1 EXAMINE INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500 15000,22500)))",
        Select(T, "INBOX", readonly=True, qresync=QResync(
            67890007, 90060115194045000, seq("1:29997"), seq("5000,7500"), seq("15000,22500"))),
    ),
    (b"t1 SELECT INBOX (QRESYNC (1 2 (1:3 4:6)) CONDSTORE)",
     Select(T, "INBOX", condstore=True, qresync=QResync(1, 2, None, seq("1:3"), seq("4:6")))),
    (b"t1 CREATE owatagusiam/", Create(T, "owatagusiam/")),
    (b"t1 CREATE Drafts (USE (\\drafts \\Sent \\X-Custom))", Create(T, "Drafts", ("\\Drafts", "\\Sent", "\\X-Custom"))),
    (b"t1 CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-", Create(T, "~peter/mail/台北/日本語")),
    (b"t1 DELETE blurdybloop", Delete(T, "blurdybloop")),
    (b"t1 RENAME blurdybloop sarasoop", Rename(T, "blurdybloop", "sarasoop")),
    (b"t1 RENAME INBOX old-inbox", Rename(T, "INBOX", "old-inbox")),
    (b"t1 SUBSCRIBE #news.comp.mail.mime", Subscribe(T, "#news.comp.mail.mime")),
    (b't1 UNSUBSCRIBE "Tom&-Jerry"', Unsubscribe(T, "Tom&Jerry")),
    (b't1 LIST "" *', List(T, "", ("*",))),
    (b"t1 LIST ~/Mail/ %/foo*", List(T, "~/Mail/", ("%/foo*",))),
    (b't1 LIST "" ""', List(T, "", ("",))),
    (b't1 LIST () "" %', List(T, "", ("%",), extended=True)),
    (
        b't1 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)',
        List(T, "", ("%",), ("SUBSCRIBED", "RECURSIVEMATCH"), ("CHILDREN",), extended=True),
    ),
    (
        b't1 list (special-use) "" "*" return (special-use)',
        List(T, "", ("*",), ("SPECIAL-USE",), ("SPECIAL-USE",), extended=True),
    ),
    (
        b't1 LIST (REMOTE SUBSCRIBED) "" ("INBOX" Drafts Sent*) RETURN (STATUS (MESSAGES UNSEEN) SUBSCRIBED)',
        List(T, "", ("INBOX", "Drafts", "Sent*"), ("REMOTE", "SUBSCRIBED"), ("STATUS", "SUBSCRIBED"),
             ("MESSAGES", "UNSEEN"), extended=True),
    ),
    (b't1 LIST "" % RETURN ()', List(T, "", ("%",), extended=True)),
    (b't1 LSUB "#news." "comp.mail.*"', Lsub(T, "#news.", "comp.mail.*")),
    (b"t1 NAMESPACE", Namespace(T)),
    (
        b"t1 STATUS blurdybloop (UIDNEXT messages SIZE DELETED HIGHESTMODSEQ APPENDLIMIT "
        b"MAILBOXID DELETED-STORAGE RECENT UNSEEN UIDVALIDITY UIDNEXT)",
        Status(T, "blurdybloop", ("UIDNEXT", "MESSAGES", "SIZE", "DELETED", "HIGHESTMODSEQ", "APPENDLIMIT",
                                  "MAILBOXID", "DELETED-STORAGE", "RECENT", "UNSEEN", "UIDVALIDITY")),
    ),
    (b"t1 APPEND INBOX {5}\r\nhello\r\n", Append(T, "INBOX", (AppendMessage(b"hello"),))),
    (b"t1 IDLE\r\n", Idle(T)),
    (b"t1 COMPRESS deflate", Compress(T, "DEFLATE")),
    (b't1 GETQUOTA ""', GetQuota(T, "")),
    (b"t1 GETQUOTAROOT inbox", GetQuotaRoot(T, "INBOX")),
    (b't1 SETQUOTA "" (STORAGE 512 message 1000)', SetQuota(T, "", (("STORAGE", 512), ("MESSAGE", 1000)))),
    (b't1 SETQUOTA "#user/alice" ()', SetQuota(T, "#user/alice", ())),
    # §6.4, selected
    (b"t1 CHECK", Check(T)),
    (b"t1 CLOSE", Close(T)),
    (b"t1 UNSELECT", Unselect(T)),
    (b"t1 EXPUNGE", Expunge(T)),
    (b"t1 UID EXPUNGE 3000:3002", Expunge(T, uid=True, sequence=seq("3000:3002"))),
    (b"t1 SEARCH FLAGGED", Search(T, FLAGGED)),
    (b"t1 UID SEARCH RETURN () 1:*", Search(T, SequenceKey(seq("1:*")), uid=True, return_options=("ALL",))),
    (b"t1 FETCH 1 FLAGS", Fetch(T, seq("1"), (FetchAttribute("FLAGS"),))),
    (b"t1 UID FETCH 1:* FAST", Fetch(T, seq("1:*"), FAST, uid=True)),
    (b"t1 STORE 2:4 +FLAGS (\\Deleted)", Store(T, seq("2:4"), "+", False, ("\\Deleted",))),
    (b"t1 STORE 1 FLAGS.SILENT \\seen $Forwarded", Store(T, seq("1"), "", True, ("\\Seen", "$Forwarded"))),
    (b"t1 UID STORE 1:* -flags.silent ()", Store(T, seq("1:*"), "-", True, (), uid=True)),
    (
        b"t1 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted \\Deleted)",
        Store(T, seq("7,5,9"), "+", True, ("\\Deleted",), unchangedsince=320162338),
    ),
    (b"t1 UID STORE $ (UNCHANGEDSINCE 0) FLAGS ()", Store(T, seq("$"), "", False, (), uid=True, unchangedsince=0)),
    (b"t1 COPY 2:4 MEETING", Copy(T, seq("2:4"), "MEETING")),
    (b"t1 UID COPY 5:2 inbox", Copy(T, seq("5:2"), "INBOX", uid=True)),
    (b"t1 MOVE $ Trash", Move(T, seq("$"), "Trash")),
    (b"t1 UID MOVE 42:69 {3}\r\nfoo", Move(T, seq("42:69"), "foo", uid=True)),
    (
        b"t1 SORT (REVERSE DATE SUBJECT) UTF-8 SINCE 1-Feb-1994",
        Sort(T, (SortCriterion("DATE", True), SortCriterion("SUBJECT")), "UTF-8",
             InternalDate("since", date(1994, 2, 1))),
    ),
    (
        b"t1 UID SORT (ARRIVAL CC FROM SIZE TO reverse arrival) us-ascii ALL",
        Sort(T, tuple(SortCriterion(k) for k in ("ARRIVAL", "CC", "FROM", "SIZE", "TO"))
             + (SortCriterion("ARRIVAL", True),), "US-ASCII", All(), uid=True),
    ),
    (
        b"t1 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000",
        Thread(T, "ORDEREDSUBJECT", "UTF-8", InternalDate("since", date(2000, 3, 5))),
    ),
    (b't1 UID THREAD references "US-ASCII" ALL UNDELETED',
     Thread(T, "REFERENCES", "US-ASCII", And((All(), Not(DELETED))), uid=True)),
]


@pytest.mark.parametrize("data, expected", [row(d, e) for d, e in VALID])
def test_valid_commands(data, expected):
    assert parse_command(data) == expected


def test_every_command_has_a_valid_row():
    words = set()
    for data, _ in VALID:
        parts = data.rstrip(b"\r\n").split(b" ")
        words.add(parts[1].upper().decode())
        if parts[1].upper() == b"UID":
            words.add("UID " + parts[2].upper().decode())
    uid_commands = {f"UID {w}" for w in ("COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT", "THREAD")}
    assert COMMAND_NAMES | uid_commands <= words


def test_commands_are_hashable_values():
    assert {parse_command(data) for data, _ in VALID} == {expected for _, expected in VALID}


# --- Errors ---------------------------------------------------------------------------

ERRORS = [
    # (data, tag, message) — message is a regular expression matched against the text.
    (b"", None, "missing or invalid tag"),
    (b"\r\n", None, "missing or invalid tag"),
    (b"* NOOP", None, "missing or invalid tag"),
    (b"+ NOOP", None, "missing or invalid tag"),
    (b"(x NOOP", None, "missing or invalid tag"),
    (b"x" * 300 + b" NOOP", None, "missing or invalid tag"),
    (b"t1", T, "missing command"),
    (b"t1\r\n", T, "missing command"),
    (b"t1 ", T, "expected command name"),
    (b"t1  NOOP", T, "expected command name"),
    (b"t1\tNOOP", T, "expected a space"),
    (b"t1 XYZZY", T, "unknown command"),
    (b"t1 NOOP extra", T, "unexpected characters"),
    (b"t1 NOOP\r\nt2 NOOP\r\n", T, "unexpected characters"),
    (b"t1 NOOP\n", T, "unexpected characters"),
    (b"t1 UID", T, "missing arguments"),
    (b"t1 UID FOO 1", T, "unknown UID command"),
    (b"t1 UID EXPUNGE", T, "missing arguments"),
    (b"t1 UID EXPUNGE x", T, "expected a sequence set"),
    (b"t1 EXPUNGE 1", T, "unexpected characters"),
    # LOGIN / AUTHENTICATE / ID / ENABLE / COMPRESS
    (b"t1 LOGIN alice", T, "missing arguments"),
    (b't1 LOGIN "alice secret', T, "invalid quoted string"),
    (b't1 LOGIN alice "a\\qb"', T, "invalid quoted string"),
    (b't1 LOGIN alice "a\r\nb"', T, "invalid quoted string"),
    (b"t1 LOGIN {3}\r\nab", T, "literal data truncated"),
    (b"t1 LOGIN {3}abc x", T, "invalid literal"),
    (b"t1 LOGIN {99999999999999999999999}\r\nab x", T, "invalid literal"),
    (b"t1 LOGIN ~{1}\r\na b", T, "literal8 not allowed"),
    (b"t1 LOGIN alice (x)", T, "expected a string"),
    (b't1 LOGIN alice "\xff"', T, "password is not UTF-8"),
    (b"t1 LOGIN {3}\r\na\x00b c", T, "user name contains NUL"),
    (b"t1 AUTHENTICATE", T, "missing arguments"),
    (b"t1 AUTHENTICATE PLAIN !!!", T, "invalid base64"),
    (b"t1 AUTHENTICATE PLAIN YQ", T, "invalid base64"),
    (b"t1 AUTHENTICATE PLAIN YR==", T, "invalid base64"),
    (b"t1 AUTHENTICATE PLAIN YQ== x", T, "unexpected characters"),
    (b"t1 AUTHENTICATE PLAIN ", T, "invalid base64"),
    (b"t1 ENABLE", T, "missing arguments"),
    (b"t1 ENABLE (X)", T, "expected capability"),
    (b"t1 COMPRESS", T, "missing arguments"),
    (b't1 ID ("name")', T, "expected a space"),
    (b't1 ID (name "x")', T, "expected a string"),
    (b"t1 ID " + b"(" + b" ".join(b'"f%d" "v"' % i for i in range(31)) + b")", T, "too many ID parameters"),
    (b't1 ID ("' + b"f" * 31 + b'" "v")', T, "too long"),
    (b"t1 ID", T, "missing arguments"),
    # SELECT / CREATE / mailbox names
    (b"t1 SELECT", T, "missing arguments"),
    (b"t1 SELECT INBOX ()", T, "empty list"),
    (b"t1 SELECT INBOX (FOO)", T, "unknown SELECT parameter"),
    (b"t1 SELECT INBOX (CONDSTORE CONDSTORE)", T, "duplicate SELECT parameter"),
    (b"t1 SELECT INBOX (QRESYNC (0 5))", T, "UIDVALIDITY must not be zero"),
    (b"t1 SELECT INBOX (QRESYNC (1 0))", T, "mod-sequence must not be zero"),
    (b"t1 SELECT INBOX (QRESYNC (1 9223372036854775808))", T, "mod-sequence too large"),
    (b"t1 SELECT INBOX (QRESYNC (1 5 1:*))", T, "not allowed here"),
    (b"t1 SELECT INBOX (QRESYNC (1 5 $))", T, "not allowed here"),
    (b"t1 SELECT INBOX (QRESYNC (1 5 (1:2)))", T, "expected a space"),
    (b"t1 SELECT INBOX CONDSTORE", T, r"expected '\('"),
    (b"t1 SELECT &U,BTFw", T, "unterminated modified UTF-7"),
    (b"t1 SELECT &AGE-", T, "not canonical modified UTF-7"),
    (b"t1 SELECT &ZeVnLIqe-&U,BTFw-", T, "not canonical modified UTF-7"),
    (b"t1 SELECT &2AA-", T, "invalid modified UTF-7"),
    (b"t1 SELECT &U=BTFw-", T, "invalid modified UTF-7"),
    (b"t1 SELECT a&AAE-b", T, "control characters"),
    ('t1 SELECT "日本語"'.encode(), T, "must be modified UTF-7"),
    (b"t1 SELECT {3}\r\na\x00b", T, "must be modified UTF-7"),
    (b"t1 SELECT (x)", T, "expected a string"),
    (b"t1 CREATE Drafts (USE (Drafts))", T, "expected a special-use attribute"),
    (b"t1 CREATE Drafts (FOO)", T, "unknown CREATE parameter"),
    (b"t1 CREATE Drafts (USE \\Drafts)", T, r"expected '\('"),
    (b"t1 RENAME a", T, "missing arguments"),
    # LIST / LSUB / STATUS
    (b't1 LIST (RECURSIVEMATCH) "" *', T, "RECURSIVEMATCH needs another selection option"),
    (b't1 LIST (REMOTE RECURSIVEMATCH) "" *', T, "RECURSIVEMATCH needs another selection option"),
    (b't1 LIST (FOO) "" *', T, "unknown LIST selection option"),
    (b't1 LIST "" % RETURN (FOO)', T, "unknown LIST return option"),
    (b't1 LIST "" % RETURNS ()', T, "expected RETURN"),
    (b't1 LIST "" % RETURN (STATUS (BOGUS))', T, "unknown status item"),
    (b't1 LIST "" % RETURN (STATUS (SIZE) STATUS (SIZE))', T, "duplicate STATUS"),
    (b't1 LIST ""', T, "missing arguments"),
    (b't1 LIST "" ()', T, "empty list"),
    (b't1 LIST "" (a b', T, r"expected '\)'"),
    (b"t1 LSUB x", T, "missing arguments"),
    (b"t1 STATUS INBOX ()", T, "empty list"),
    (b"t1 STATUS INBOX (FOO)", T, "unknown status item"),
    (b"t1 STATUS INBOX MESSAGES", T, r"expected '\('"),
    (b"t1 STATUS INBOX (MESSAGES )", T, "expected status item"),
    # quota
    (b't1 SETQUOTA "" (STORAGE)', T, "expected a space"),
    (b't1 SETQUOTA "" (STORAGE x)', T, "expected quota limit"),
    (b't1 SETQUOTA "" (STORAGE 1 MESSAGE 2', T, "missing arguments"),
    (b"t1 GETQUOTA", T, "missing arguments"),
    # COPY / MOVE / STORE
    (b"t1 COPY 1", T, "missing arguments"),
    (b"t1 COPY x INBOX", T, "expected a sequence set"),
    (b"t1 MOVE 0 INBOX", T, "invalid sequence set"),
    (b"t1 MOVE 1:2:3 INBOX", T, "invalid sequence set"),
    (b"t1 MOVE 1,,2 INBOX", T, "invalid sequence set"),
    (b"t1 MOVE 1,$ INBOX", T, "invalid sequence set"),
    (b"t1 MOVE 4294967296 INBOX", T, "invalid sequence set"),
    (b"t1 STORE 1 FLAGZ (\\Seen)", T, "expected FLAGS"),
    (b"t1 STORE 1 *FLAGS ()", T, "expected FLAGS"),
    (b"t1 STORE 1 +FLAGS", T, "missing arguments"),
    (b"t1 STORE 1 FLAGS (\\)", T, "expected flag"),
    (b"t1 STORE 1 FLAGS (\\Seen", T, r"expected '\)'"),
    (b"t1 STORE 1 FLAGS (\\Seen) x", T, "unexpected characters"),
    (b"t1 STORE 1 (UNCHANGEDSINCE) FLAGS ()", T, "expected a space"),
    (b"t1 STORE 1 (UNCHANGEDSINCE 1 UNCHANGEDSINCE 2) FLAGS ()", T, "duplicate STORE modifier"),
    (b"t1 STORE 1 (FOO 1) FLAGS ()", T, "unknown STORE modifier"),
    # SORT / THREAD
    (b"t1 SORT (FOO) UTF-8 ALL", T, "unknown sort key"),
    (b"t1 SORT () UTF-8 ALL", T, "empty list"),
    (b"t1 SORT (REVERSE) UTF-8 ALL", T, "expected a space"),
    (b"t1 SORT (DATE) UTF-8", T, "missing arguments"),
    (b"t1 THREAD FOO UTF-8 ALL", T, "unknown THREAD algorithm"),
    (b"t1 THREAD REFERENCES UTF-8 BOGUS", T, "unknown search key"),
]


@pytest.mark.parametrize(
    "data, tag, message", [pytest.param(*e, id=e[0].decode("utf-8", "replace")[:60]) for e in ERRORS]
)
def test_errors(data, tag, message):
    with pytest.raises(ParseError) as caught:
        parse_command(data)
    assert re.search(message, caught.value.message), caught.value.message
    assert caught.value.tag == tag
    assert caught.value.status == "BAD"
    assert caught.value.code is None
    assert str(caught.value) == caught.value.message


def test_error_messages_never_echo_client_bytes():
    with pytest.raises(ParseError) as caught:
        parse_command(b"t1 SELECT \"evil\r\n* OK injected")
    assert "evil" not in caught.value.message and "\r" not in caught.value.message


def test_unknown_charset_is_NO_BADCHARSET():
    # RFC 9051 §6.4.4: an unsupported charset is answered NO [BADCHARSET], not BAD.
    for data in (b"t1 SEARCH CHARSET KLINGON ALL", b"t1 SORT (DATE) ALL ALL", b'T2 THREAD REFERENCES "X" ALL'):
        with pytest.raises(ParseError) as caught:
            parse_command(data)
        assert (caught.value.code, caught.value.status) == ("BADCHARSET", "NO")
        assert caught.value.tag == data.split(b" ")[0].decode()


# --- SEARCH ---------------------------------------------------------------------------

SEARCHES = [
    # (arguments after "t1 SEARCH ", key, charset, return options)
    (b"ALL", All(), None, None),
    (
        b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
        And((FLAGGED, InternalDate("since", date(1994, 2, 1)), Not(Header("from", "Smith")))),
        None, None,
    ),
    (b"OR OR SEEN FLAGGED DELETED", Or(Or(SEEN, FLAGGED), DELETED), None, None),
    (b"OR SEEN OR FLAGGED DELETED", Or(SEEN, Or(FLAGGED, DELETED)), None, None),
    (
        b"NOT (OR SEEN NOT FLAGGED UNDELETED)",
        Not(And((Or(SEEN, Not(FLAGGED)), Not(DELETED)))),
        None, None,
    ),
    (b"NOT NOT SEEN", Not(Not(SEEN)), None, None),
    (b"OR (SEEN DRAFT) NOT (DELETED)", Or(And((SEEN, DRAFT)), Not(DELETED)), None, None),
    (b"(SEEN (FLAGGED (DRAFT)))", And((SEEN, FLAGGED, DRAFT)), None, None),
    (b"((SEEN))", SEEN, None, None),
    (b"1:5,7 UID 10:*", And((SequenceKey(seq("1:5,7")), UidKey(seq("10:*")))), None, None),
    (b"$", SequenceKey(SequenceSet(saved=True)), None, None),
    (b"UID $ SEEN", And((UidKey(SequenceSet(saved=True)), SEEN)), None, None),
    (b"NEW", And((RECENT, Not(SEEN))), None, None),
    (b"OLD RECENT", And((Not(RECENT), RECENT)), None, None),
    (b"unseen unanswered undraft unflagged answered",
     And((Not(SEEN), Not(Flag("\\Answered")), Not(DRAFT), Not(FLAGGED), Flag("\\Answered"))), None, None),
    (b"KEYWORD $Forwarded UNKEYWORD $Junk", And((Flag("$Forwarded"), Not(Flag("$Junk")))), None, None),
    (b'HEADER Message-ID "<x@y>"', Header("message-id", "<x@y>"), None, None),
    (b'HEADER X-Spam ""', Header("x-spam", ""), None, None),
    (b"LARGER 1000 SMALLER 4294967296000", And((Larger(1000), Smaller(4294967296000))), None, None),
    (
        b'BEFORE "1-Feb-1994" ON 31-Dec-1999 SENTBEFORE 1-jan-2000 SENTON 02-Mar-2001 SENTSINCE 3-Apr-2002',
        And((InternalDate("before", date(1994, 2, 1)), InternalDate("on", date(1999, 12, 31)),
             SentDate("before", date(2000, 1, 1)), SentDate("on", date(2001, 3, 2)),
             SentDate("since", date(2002, 4, 3)))),
        None, None,
    ),
    (
        b'BODY word TEXT "two words" SUBJECT {4}\r\nsubj CC cc BCC bcc TO to',
        And((Body("word"), Text("two words"), Header("subject", "subj"), Header("cc", "cc"),
             Header("bcc", "bcc"), Header("to", "to"))),
        None, None,
    ),
    (b"TEXT resp]special", Text("resp]special"), None, None),
    (b"MODSEQ 620162338", ModSeq(620162338), None, None),
    (b'MODSEQ "/flags/\\\\draft" all 620162338', ModSeq(620162338, "\\Draft", "all"), None, None),
    (b'MODSEQ "/flags/$Junk" PRIV 0', ModSeq(0, "$Junk", "priv"), None, None),
    (b"EMAILID M6d99ac3275bb4e THREADID T64b478a75b7ea9",
     And((EmailId("M6d99ac3275bb4e"), ThreadId("T64b478a75b7ea9"))), None, None),
    ('CHARSET UTF-8 TEXT "héllo"'.encode(), Text("héllo"), "UTF-8", None),
    (b"CHARSET iso-8859-1 TEXT {5}\r\nh\xe9llo", Text("héllo"), "ISO-8859-1", None),
    (b'CHARSET "KOI8-R" SUBJECT {6}\r\n\xf0\xd2\xc9\xd7\xc5\xd4', Header("subject", "Привет"), "KOI8-R", None),
    (b"RETURN (MIN MAX COUNT) UNSEEN", Not(SEEN), None, ("MIN", "MAX", "COUNT")),
    (b"RETURN () ALL", All(), None, ("ALL",)),
    (b"RETURN (SAVE) CHARSET US-ASCII DELETED", DELETED, "US-ASCII", ("SAVE",)),
]


@pytest.mark.parametrize(
    "arguments, key, charset, return_options",
    [pytest.param(*s, id=s[0].decode("utf-8", "replace")[:60]) for s in SEARCHES],
)
def test_search(arguments, key, charset, return_options):
    for uid in (False, True):
        data = (b"t1 UID SEARCH " if uid else b"t1 SEARCH ") + arguments
        assert parse_command(data) == Search(T, key, uid=uid, charset=charset, return_options=return_options)


def test_search_return_options_are_deduplicated():
    command = parse_command(b"t1 SEARCH RETURN (all ALL save) SEEN")
    assert command.return_options == ("ALL", "SAVE")


SEARCH_ERRORS = [
    (b"", "missing arguments"),
    (b"FOO", "unknown search key"),
    (b"NOT", "missing arguments"),
    (b"OR SEEN", "missing arguments"),
    (b"(SEEN", r"expected '\)'"),
    (b"()", "unknown search key|expected search key"),
    (b"SEEN)", "unexpected characters"),
    (b"SEEN  DRAFT", "expected search key"),
    (b"BEFORE 31-Feb-2000", "invalid date"),
    (b"BEFORE 1-Foo-2000", "invalid date"),
    (b"SINCE 1-Feb-94", "invalid date"),
    (b'SINCE "1-Feb-1994', "invalid date"),
    (b"SINCE 1-Feb-0000", "invalid date"),
    (b"CHARSET UTF-8 TEXT {2}\r\n\xff\xfe", "does not match the charset"),
    (b"TEXT {3}\r\na\x00b", "contains NUL"),
    (b"RETURN (FOO) ALL", "unknown SEARCH return option"),
    (b"RETURN ALL", r"expected '\('"),
    (b"LARGER x", "expected size"),
    (b"LARGER 99999999999999999999999", "size too large"),
    (b"UID 0:5", "invalid sequence set"),
    (b"UID", "missing arguments"),
    (b"1,$", "invalid sequence set"),
    (b"KEYWORD \\Seen", "expected keyword"),
    (b'MODSEQ "/flags/" all 5', "invalid MODSEQ entry name"),
    (b'MODSEQ "/other/x" all 5', "invalid MODSEQ entry name"),
    (b'MODSEQ "/flags/a b" all 5', "invalid MODSEQ entry name"),
    (b'MODSEQ "/flags/\\\\Seen" bogus 5', "unknown MODSEQ entry type"),
    (b'MODSEQ "/flags/\\\\Seen" all', "missing arguments"),
    (b'EMAILID "a b"', "invalid object id"),
    (b"TEXT {5}\r\nab", "literal data truncated"),
    (b"TEXT ~{1}\r\na", "literal8 not allowed"),
    (b"HEADER From", "missing arguments"),
]


@pytest.mark.parametrize("arguments, message", SEARCH_ERRORS)
def test_search_errors(arguments, message):
    with pytest.raises(ParseError) as caught:
        parse_command(b"t1 SEARCH " + arguments if arguments else b"t1 SEARCH")
    assert re.search(message, caught.value.message), caught.value.message
    assert caught.value.tag == T


def test_search_nesting_is_bounded():
    def nested(depth):
        return b"t1 SEARCH " + b"(" * depth + b"SEEN" + b")" * depth

    assert parse_command(nested(MAX_DEPTH)).key == SEEN
    with pytest.raises(ParseError, match="too deeply nested"):
        parse_command(nested(MAX_DEPTH + 1))
    key = parse_command(b"t1 SEARCH " + b"NOT " * MAX_DEPTH + b"SEEN").key
    for _ in range(MAX_DEPTH):
        key = key.key
    assert key == SEEN
    with pytest.raises(ParseError, match="too deeply nested"):
        parse_command(b"t1 SEARCH " + b"NOT " * (MAX_DEPTH + 1) + b"SEEN")
    with pytest.raises(ParseError, match="too deeply nested"):
        parse_command(b"t1 SEARCH " + b"OR SEEN " * (MAX_DEPTH + 1) + b"SEEN")
    with pytest.raises(ParseError, match="too deeply nested"):
        parse_command(b"t1 SEARCH " + b"NOT (" * 40 + b"SEEN" + b")" * 40)


def test_search_key_count_is_bounded():
    assert len(parse_command(b"t1 SEARCH" + b" SEEN" * MAX_SEARCH_KEYS).key.keys) == MAX_SEARCH_KEYS
    with pytest.raises(ParseError, match="too many search keys"):
        parse_command(b"t1 SEARCH" + b" SEEN" * (MAX_SEARCH_KEYS + 1))


# --- FETCH ----------------------------------------------------------------------------

FETCHES = [
    # (arguments after "t1 FETCH ", sequence, items)
    (b"1 ALL", "1", FAST + (FetchAttribute("ENVELOPE"),)),
    (b"1:* fast", "1:*", FAST),
    (b"2 FULL", "2", FAST + (FetchAttribute("ENVELOPE"), FetchAttribute("BODY"))),
    (b"5:2 flags", "5:2", (FetchAttribute("FLAGS"),)),
    (b"$ (UID)", "$", (FetchAttribute("UID"),)),
    (
        b"2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        "2:4",
        (FetchAttribute("FLAGS"), FetchBody(Section(text="HEADER.FIELDS", fields=("DATE", "FROM")))),
    ),
    (b"1 BODY[]", "1", (FetchBody(Section()),)),
    (b"1 BODY[]<0.2048>", "1", (FetchBody(Section(), Partial(0, 2048)),)),
    (b"1 body.peek[1.2.3.mime]<10.20>", "1", (FetchBody(Section((1, 2, 3), "MIME"), Partial(10, 20), peek=True),)),
    (
        b'1 (BODY[TEXT] BODY[1.HEADER] BODY[4.2.TEXT] BODY[HEADER.FIELDS.NOT (X-A "X-B" {3}\r\nX-C)] BODY[3])',
        "1",
        (
            FetchBody(Section(text="TEXT")),
            FetchBody(Section((1,), "HEADER")),
            FetchBody(Section((4, 2), "TEXT")),
            FetchBody(Section(text="HEADER.FIELDS.NOT", fields=("X-A", "X-B", "X-C"))),
            FetchBody(Section((3,))),
        ),
    ),
    (b"1 BODY[1.2.HEADER.FIELDS (Subject)]", "1",
     (FetchBody(Section((1, 2), "HEADER.FIELDS", ("Subject",))),)),
    (
        b"1 (BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.SIZE UID MODSEQ RFC822 RFC822.HEADER "
        b"RFC822.TEXT EMAILID THREADID BODY)",
        "1",
        tuple(FetchAttribute(n) for n in (
            "BODYSTRUCTURE", "ENVELOPE", "INTERNALDATE", "RFC822.SIZE", "UID", "MODSEQ", "RFC822",
            "RFC822.HEADER", "RFC822.TEXT", "EMAILID", "THREADID", "BODY")),
    ),
    (
        b"1 (BINARY[] BINARY.PEEK[1.2]<0.1024> BINARY.SIZE[3] binary.size[])",
        "1",
        (FetchBinary(), FetchBinary((1, 2), Partial(0, 1024), peek=True), FetchBinarySize((3,)), FetchBinarySize()),
    ),
    (b"1 PREVIEW", "1", (FetchPreview(),)),
    (b"1 PREVIEW (LAZY)", "1", (FetchPreview(lazy=True),)),
    (b"1 (PREVIEW (lazy) FLAGS)", "1", (FetchPreview(lazy=True), FetchAttribute("FLAGS"))),
    (b"1 (FLAGS PREVIEW)", "1", (FetchAttribute("FLAGS"), FetchPreview())),
]


@pytest.mark.parametrize(
    "arguments, sequence, items", [pytest.param(*f, id=f[0].decode()[:60]) for f in FETCHES]
)
def test_fetch(arguments, sequence, items):
    assert parse_command(b"t1 FETCH " + arguments) == Fetch(T, seq(sequence), items)
    assert parse_command(b"t1 UID FETCH " + arguments) == Fetch(T, seq(sequence), items, uid=True)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"t1 FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
         Fetch(T, seq("1:*"), (FetchAttribute("FLAGS"),), changedsince=12345)),
        (b"t1 FETCH 1 PREVIEW (CHANGEDSINCE 7)", Fetch(T, seq("1"), (FetchPreview(),), changedsince=7)),
        (b"t1 FETCH * ALL (CHANGEDSINCE 0)",
         Fetch(T, seq("*"), FAST + (FetchAttribute("ENVELOPE"),), changedsince=0)),
        (b"t1 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
         Fetch(T, seq("300:500"), (FetchAttribute("FLAGS"),), uid=True, changedsince=12345, vanished=True)),
        (b"t1 UID FETCH 1 FLAGS (vanished changedsince 1)",
         Fetch(T, seq("1"), (FetchAttribute("FLAGS"),), uid=True, changedsince=1, vanished=True)),
    ],
)
def test_fetch_modifiers(data, expected):
    assert parse_command(data) == expected


FETCH_ERRORS = [
    (b"t1 FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)", "VANISHED needs UID FETCH"),
    (b"t1 UID FETCH 1 FLAGS (VANISHED)", "VANISHED needs UID FETCH and CHANGEDSINCE"),
    (b"t1 FETCH 1 ALL (CHANGEDSINCE 1 CHANGEDSINCE 2)", "duplicate FETCH modifier"),
    (b"t1 FETCH 1 FLAGS (FOO 1)", "unknown FETCH modifier"),
    (b"t1 FETCH 1 FLAGS extra", r"expected '\('"),
    (b"t1 FETCH 1 BODY.PEEK", "unknown fetch item"),
    (b"t1 FETCH 1 XYZZY", "unknown fetch item"),
    (b"t1 FETCH 1 ALL[]", "unknown fetch item"),
    (b"t1 FETCH 1 BODY[MIME]", "invalid section"),
    (b"t1 FETCH 1 BODY[1.FOO]", "invalid section"),
    (b"t1 FETCH 1 BODY[TEXT.MIME]", "invalid section"),
    (b"t1 FETCH 1 BODY[HEADER.FIELDS]", "expected a space"),
    (b"t1 FETCH 1 BODY[HEADER.FIELDS ()]", "empty list"),
    (b"t1 FETCH 1 BODY[HEADER", "expected ']'"),
    (b"t1 FETCH 1 BODY[]<5>", "invalid partial"),
    (b"t1 FETCH 1 BODY[]<0.0>", "partial length must not be zero"),
    (b"t1 FETCH 1 BODY[]<.5>", "expected partial start"),
    (b"t1 FETCH 1 BODY[0]", "invalid section part"),
    (b"t1 FETCH 1 BODY[1.0]", "invalid section part"),
    (b"t1 FETCH 1 BODY[99999999999]", "invalid section part"),
    (b"t1 FETCH 1 BODY[" + b".".join([b"1"] * (MAX_DEPTH + 1)) + b"]", "section part too deep"),
    (b"t1 FETCH 1 BINARY[TEXT]", "expected ']'"),
    (b"t1 FETCH 1 BINARY", r"expected '\['"),
    (b"t1 FETCH 1 ()", "empty list"),
    (b"t1 FETCH 1 (FLAGS", r"expected '\)'"),
    (b"t1 FETCH 1 (FLAGS )", "expected a fetch item"),
    (b"t1 FETCH 1 (ALL)", "unknown fetch item"),
    (b"t1 FETCH 1 (PREVIEW (FUZZY))", "expected a fetch item"),
    (b"t1 FETCH 1 PREVIEW (LAZY FUZZY)", "unknown preview modifier"),
    (b"t1 FETCH 1", "missing arguments"),
    (b"t1 FETCH 0 FLAGS", "invalid sequence set"),
    (b"t1 FETCH 1:2:3 FLAGS", "invalid sequence set"),
]


@pytest.mark.parametrize("data, message", FETCH_ERRORS)
def test_fetch_errors(data, message):
    with pytest.raises(ParseError) as caught:
        parse_command(data)
    assert re.search(message, caught.value.message), caught.value.message
    assert caught.value.tag == T


# --- APPEND ---------------------------------------------------------------------------

JUL_17 = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))

APPENDS = [
    (b"t1 APPEND saved-messages (\\Seen) {5}\r\nhello\r\n", "saved-messages", (AppendMessage(b"hello", ("\\Seen",)),)),
    (
        b't1 APPEND INBOX (\\Seen $Junk \\seen) "17-Jul-1996 02:44:25 -0700" {3+}\r\nabc',
        "INBOX",
        (AppendMessage(b"abc", ("\\Seen", "$Junk"), JUL_17),),
    ),
    (
        b't1 APPEND INBOX " 7-jul-1996 02:44:25 +0000" {1}\r\nx',
        "INBOX",
        (AppendMessage(b"x", (), datetime(1996, 7, 7, 2, 44, 25, tzinfo=UTC)),),
    ),
    (
        b't1 APPEND INBOX "31-Dec-1998 23:59:60 +0530" {1}\r\nx',
        "INBOX",
        (AppendMessage(b"x", (), datetime(1998, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=5, minutes=30)))),),
    ),
    (b"t1 APPEND INBOX {0}\r\n\r\n", "INBOX", (AppendMessage(b""),)),
    (b"t1 APPEND INBOX () {1}\r\nx", "INBOX", (AppendMessage(b"x"),)),
    (b"t1 APPEND INBOX {8}\r\nline\r\n\r\n\r\n", "INBOX", (AppendMessage(b"line\r\n\r\n"),)),  # CRLFs are data
    (b"t1 APPEND INBOX ~{3}\r\na\x00b", "INBOX", (AppendMessage(b"a\x00b", binary=True),)),
    (b"t1 APPEND INBOX ~{3+}\r\na\x00b", "INBOX", (AppendMessage(b"a\x00b", binary=True),)),
    (
        b"t1 APPEND INBOX utf8 (~{4}\r\nt\xc3\xa9x)",
        "INBOX",
        (AppendMessage("téx".encode(), binary=True, utf8=True),),
    ),
    (
        b't1 APPEND INBOX (\\Seen) {2}\r\nm1 {2+}\r\nm2 "1-Jan-2000 00:00:00 +0100" ~{2}\r\nm3 '
        b'(\\Draft) UTF8 (~{2}\r\nm4)\r\n',
        "INBOX",
        (
            AppendMessage(b"m1", ("\\Seen",)),
            AppendMessage(b"m2"),
            AppendMessage(b"m3", (), datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=1))), binary=True),
            AppendMessage(b"m4", ("\\Draft",), binary=True, utf8=True),
        ),
    ),
    (b"t1 APPEND Entw&APw-rfe {1}\r\nx", "Entwürfe", (AppendMessage(b"x"),)),
]


@pytest.mark.parametrize("data, mailbox, messages", [pytest.param(*a, id=a[0][:50].decode("latin-1")) for a in APPENDS])
def test_append(data, mailbox, messages):
    assert parse_command(data) == Append(T, mailbox, messages)


APPEND_ERRORS = [
    (b"t1 APPEND INBOX", "missing arguments"),
    (b"t1 APPEND INBOX\r\n", "missing arguments"),
    (b't1 APPEND INBOX "hello"', "invalid date-time"),
    (b"t1 APPEND INBOX (\\Seen)", "missing arguments"),
    (b"t1 APPEND INBOX hello", "expected the message as a literal"),
    (b"t1 APPEND INBOX {10}\r\nshort", "literal data truncated"),
    (b"t1 APPEND INBOX UTF8 ({3}\r\nabc)", "UTF8 needs a literal8"),
    (b"t1 APPEND INBOX UTF8 (~{3}\r\nabc", r"expected '\)'"),
    (b't1 APPEND INBOX "31-Feb-2000 00:00:00 +0000" {1}\r\nx', "invalid date-time"),
    (b't1 APPEND INBOX "1-Feb-2000 24:00:00 +0000" {1}\r\nx', "invalid date-time"),
    (b't1 APPEND INBOX "1-Feb-2000 00:00:00 +2400" {1}\r\nx', "invalid time zone"),
    (b't1 APPEND INBOX "1-Feb-2000 00:00:00 +0060" {1}\r\nx', "invalid time zone"),
    (b't1 APPEND INBOX "1-Feb-2000 00:00:00" {1}\r\nx', "invalid date-time"),
    (b't1 APPEND INBOX "1-Feb-2000 0:00:00 +0000" {1}\r\nx', "invalid date-time"),
    (b"t1 APPEND INBOX {1}\r\nx junk", "expected the message as a literal"),
    (b"t1 APPEND INBOX {1}\r\nx\r\nt2 NOOP\r\n", "expected a space"),
    (b"t1 APPEND INBOX {1}\r\nx ", "expected the message as a literal"),
    (b"t1 APPEND INBOX" + b" {0}\r\n" * 1001, "too many messages"),
]


@pytest.mark.parametrize("data, message", APPEND_ERRORS)
def test_append_errors(data, message):
    with pytest.raises(ParseError) as caught:
        parse_command(data)
    assert re.search(message, caught.value.message), caught.value.message
    assert caught.value.tag == T


# --- Mailbox names ---------------------------------------------------------------------

MUTF7 = [
    ("INBOX", b"INBOX"),
    ("", b""),
    ("&", b"&-"),
    ("Tom & Jerry", b"Tom &- Jerry"),
    ("台北", b"&U,BTFw-"),
    ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Entwürfe", b"Entw&APw-rfe"),
    ("äö", b"&AOQA9g-"),
    ("😀", b"&2D3eAA-"),
    ("☺", b"&Jjo-"),
    ("a\x01b", b"a&AAE-b"),
]


@pytest.mark.parametrize("name, encoded", MUTF7)
def test_modified_utf7_table(name, encoded):
    assert encode_modified_utf7(name) == encoded
    assert decode_modified_utf7(encoded) == name


@given(st.text())
def test_modified_utf7_round_trips(name):
    assert decode_modified_utf7(encode_modified_utf7(name)) == name


@given(st.binary(max_size=40))
def test_modified_utf7_decoding_is_canonical(raw):
    try:
        name = decode_modified_utf7(raw)
    except ParseError:
        return
    assert encode_modified_utf7(name) == raw


@pytest.mark.parametrize(
    "raw, utf8, expected",
    [
        (b"inbox", False, "INBOX"),
        (b'"InBoX"', False, "INBOX"),
        (b"{5}\r\niNbOx", False, "INBOX"),
        (b"INBOX.Sent", False, "INBOX.Sent"),
        (b"inbox/sub", False, "inbox/sub"),
        (b"&U,BTFw-", False, "台北"),
        (b"&U,BTFw-", True, "&U,BTFw-"),
        ('"日本語"'.encode(), True, "日本語"),
        ('"ınbox"'.encode(), True, "ınbox"),  # dotless i: not INBOX
        (b"Tom&-Jerry", False, "Tom&Jerry"),
        (b'"a]b"', False, "a]b"),
        (b"a]b", False, "a]b"),
    ],
)
def test_mailbox_names(raw, utf8, expected):
    assert parse_command(b"t1 SELECT " + raw, utf8=utf8).mailbox == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'"\xff"', "not UTF-8"),
        (b'"a\tb"', "control characters"),
        ('"a\u2028b"'.encode(), "control characters"),
        ('"a\u0085b"'.encode(), "control characters"),
        (b"{3}\r\na\x00b", "contains NUL"),
    ],
)
def test_utf8_mailbox_errors(raw, message):
    with pytest.raises(ParseError, match=message):
        parse_command(b"t1 SELECT " + raw, utf8=True)


def test_list_patterns_decode_like_mailboxes():
    command = parse_command(b't1 LIST "&U,BTFw-/" &ZeVnLIqe-/*')
    assert (command.reference, command.patterns) == ("台北/", ("日本語/*",))
    command = parse_command('t1 LIST "" "日本語/%"'.encode(), utf8=True)
    assert command.patterns == ("日本語/%",)


# --- Sequence sets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ranges",
    [
        ("1", ((1, 1),)),
        ("*", ((None, None),)),
        ("1:*", ((1, None),)),
        ("5:2", ((5, 2),)),
        ("*:3", ((None, 3),)),
        ("2,4:6,5,1", ((2, 2), (4, 6), (5, 5), (1, 1))),
        ("4294967295", ((4294967295, 4294967295),)),
    ],
)
def test_sequence_set_parse_and_str(text, ranges):
    parsed = SequenceSet.parse(text)
    assert parsed == SequenceSet(ranges)
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["", "0", "1:", ":1", "1::2", "a", "1,", ",1", "$,1", "$$", "-1", "1.5", "4294967296"])
def test_sequence_set_parse_errors(text):
    with pytest.raises(ParseError):
        SequenceSet.parse(text)


@pytest.mark.parametrize(
    "text, max_value, expected",
    [
        ("1:*", 5, [(1, 5)]),
        ("*", 5, [(5, 5)]),
        ("5:2", 10, [(2, 5)]),
        ("*:3", 10, [(3, 10)]),
        ("2,4:6,5,1", 10, [(1, 2), (4, 6)]),
        ("1:3,4:6", 10, [(1, 6)]),
        ("7,1:2,9:8", 10, [(1, 2), (7, 9)]),
        ("8:12", 10, [(8, 10)]),
        ("20:*", 10, [(10, 10)]),  # UID n:* includes the highest UID (RFC 9051 §6.4.8)
        ("*:20", 10, [(10, 10)]),
        ("20:30", 10, []),
        ("1:*", 0, []),
        ("*", 0, []),
        ("3", 0, []),
    ],
)
def test_sequence_set_resolve(text, max_value, expected):
    resolved = SequenceSet.parse(text).resolve(max_value)
    assert resolved == [range(low, high + 1) for low, high in expected]


@pytest.mark.parametrize(
    "saved, max_value, expected",
    [
        ([range(3, 5), range(8, 9)], 10, [(3, 4), (8, 8)]),
        ([range(8, 9), range(3, 6), range(5, 7)], 10, [(3, 6), (8, 8)]),
        ([range(5, 20)], 10, [(5, 10)]),
        ([range(4, 0, -1)], 10, [(1, 4)]),
        ([], 10, []),
        (None, 10, []),  # RFC 5182 §2.1: no saved result means the empty set
    ],
)
def test_sequence_set_resolve_saved(saved, max_value, expected):
    resolved = SequenceSet(saved=True).resolve(max_value, saved=saved)
    assert resolved == [range(low, high + 1) for low, high in expected]


def test_sequence_set_over_a_large_mailbox_stays_ranges():
    everything = SequenceSet.parse("1:*")
    assert everything.resolve(100_000) == [range(1, 100_001)]
    assert everything.count(100_000) == 100_000
    assert everything.contains(50_000, 100_000)
    assert not everything.contains(100_001, 100_000)
    assert not everything.contains(0, 100_000)
    assert list(itertools.islice(everything.numbers(100_000), 3)) == [1, 2, 3]
    sparse = SequenceSet.parse(",".join(str(n) for n in range(1, 20_000, 2)))
    assert sparse.count(100_000) == 10_000
    assert sparse.contains(19_999, 100_000) and not sparse.contains(20_000, 100_000)


def test_sequence_set_helpers():
    assert str(SequenceSet.from_numbers([5, 1, 2, 3, 9, 10, 3])) == "1:3,5,9:10"
    assert str(SequenceSet.from_numbers([])) == ""
    assert str(SequenceSet.from_ranges([range(1, 4), range(7, 8), range(9, 9)])) == "1:3,7"
    assert str(SequenceSet(saved=True)) == "$"
    assert SequenceSet.parse("1:5,*,9:3").highest() == 9
    assert SequenceSet.parse("*").highest() == 0
    assert SequenceSet.parse("3:*").uses_star and not SequenceSet.parse("3:4").uses_star


def test_sequence_set_range_count_is_bounded():
    with pytest.raises(ParseError, match="sequence set too long"):
        SequenceSet.parse(",".join(["1"] * 100_001))
    with pytest.raises(ParseError, match="sequence set too long") as caught:
        parse_command(b"t1 FETCH " + b",".join([b"1"] * 100_001) + b" FLAGS")
    assert caught.value.tag == T


seq_numbers = st.one_of(st.none(), st.integers(min_value=1, max_value=40))
sequence_sets = st.builds(
    SequenceSet, st.lists(st.tuples(seq_numbers, seq_numbers), min_size=1, max_size=8).map(tuple)
)


@given(sequence_sets, st.integers(min_value=0, max_value=30))
def test_sequence_set_resolve_matches_brute_force(sequence_set, max_value):
    expected = set()
    for first, last in sequence_set.ranges:
        a = max_value if first is None else first
        b = max_value if last is None else last
        expected |= {n for n in range(min(a, b), max(a, b) + 1) if 1 <= n <= max_value}
    resolved = sequence_set.resolve(max_value)
    assert list(sequence_set.numbers(max_value)) == sorted(expected)
    assert sequence_set.count(max_value) == len(expected)
    assert all(a.stop < b.start for a, b in zip(resolved, resolved[1:]))  # disjoint, merged
    assert SequenceSet.parse(str(sequence_set)) == sequence_set


# --- Framing: literal_announcement and friends -----------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"t1 LOGIN {5}\r\n", Literal(5, True)),
        (b"t1 LOGIN {5+}\r\n", Literal(5, False)),
        (b"t1 APPEND INBOX ~{10}\r\n", Literal(10, True, binary=True)),
        (b" UTF8 (~{10+}\r\n", Literal(10, False, binary=True)),
        (b"{0}\r\n", Literal(0, True)),
        (b"t1 LOGIN {005}\r\n", Literal(5, True)),
        (b"t1 LOGIN alice secret\r\n", None),
        (b"t1 LOGIN {5}", None),
        (b"t1 LOGIN {5}\n", None),
        (b"t1 LOGIN {}\r\n", None),
        (b"t1 LOGIN {+}\r\n", None),
        (b"t1 LOGIN {5a}\r\n", None),
        (b"t1 LOGIN {-5}\r\n", None),
        (b"t1 LOGIN {5++}\r\n", None),
        (b't1 LOGIN "{5}"\r\n', None),
        (b"t1 LOGIN 5}\r\n", None),
        (b"}\r\n", None),
        (b"", None),
    ],
)
def test_literal_announcement(line, expected):
    assert literal_announcement(line) == expected


@pytest.mark.parametrize(
    "line, kwargs, tag, status",
    [
        (b"t1 APPEND INBOX {999999999}\r\n", {"max_literal": 1000}, T, "NO"),
        (b"t1 APPEND INBOX {999999999+}\r\n", {"max_literal": 1000}, T, "BAD"),
        (b"t1 APPEND INBOX ~{1001}\r\n", {"max_literal": 1000}, T, "NO"),
        (b"t1 APPEND INBOX {5000+}\r\n", {"max_nonsync": 4096}, T, "BAD"),
        (b" {" + b"9" * 40 + b"}\r\n", {}, None, "NO"),
        (b" {9999}\r\n", {"max_literal": 10, "tag": "A7"}, "A7", "NO"),
    ],
)
def test_literal_announcement_too_big(line, kwargs, tag, status):
    with pytest.raises(LiteralTooBig) as caught:
        literal_announcement(line, **kwargs)
    error = caught.value
    assert isinstance(error, ParseError)
    assert (error.code, error.tag, error.status) == ("TOOBIG", tag, status)
    assert error.literal.synchronizing == (status == "NO")


def test_literal_minus_allows_large_synchronizing_literals():
    assert literal_announcement(b"t1 APPEND INBOX {5000}\r\n", max_nonsync=4096) == Literal(5000, True)
    assert literal_announcement(b"t1 APPEND INBOX {4096+}\r\n", max_nonsync=4096) == Literal(4096, False)


def frame(stream, *, max_literal=1 << 20):
    """Assemble one command the way the I/O layer does: line, literal octets, line..."""
    command, continuations = b"", 0
    while True:
        end = stream.index(b"\r\n") + 2
        line, stream = stream[:end], stream[end:]
        command += line
        literal = literal_announcement(line, max_literal=max_literal)
        if literal is None:
            return command, continuations, stream
        continuations += literal.synchronizing
        command, stream = command + stream[: literal.size], stream[literal.size :]


def test_framing_contract_end_to_end():
    stream = (
        b"t1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n"
        b"t2 APPEND INBOX (\\Seen) {7}\r\nab\r\ncd\r {2}\r\n\r\n\r\n"
        b"t3 IDLE\r\n"
    )
    first, continuations, stream = frame(stream)
    assert continuations == 1
    assert parse_command(first) == Login("t1", "alice", "secret")
    second, continuations, stream = frame(stream)
    assert continuations == 2
    assert parse_command(second) == Append(
        "t2", "INBOX", (AppendMessage(b"ab\r\ncd\r", ("\\Seen",)), AppendMessage(b"\r\n"))
    )
    third, _, stream = frame(stream)
    assert parse_command(third) == Idle("t3") and stream == b""


def test_peek_tag_and_idle_done():
    assert peek_tag(b"a001 FETCH 1 {5}\r\n") == "a001"
    assert peek_tag(b"a001\r\n") == "a001"
    assert peek_tag(b" {5}\r\n") is None
    assert peek_tag(b"a(b NOOP") is None
    assert peek_tag(b"x" * 300 + b" NOOP") is None
    assert is_idle_done(b"DONE\r\n") and is_idle_done(b"done\r\n") and is_idle_done(b"Done")
    assert not is_idle_done(b"DONE NOW\r\n") and not is_idle_done(b"t1 NOOP\r\n")


# --- Limits ----------------------------------------------------------------------------


def test_list_items_are_bounded():
    assert len(parse_command(b"t1 STORE 1 FLAGS (" + b" ".join([b"k"] * 1000) + b")").flags) == 1
    with pytest.raises(ParseError, match="too many items"):
        parse_command(b"t1 STORE 1 FLAGS (" + b" ".join([b"k"] * 1001) + b")")
    with pytest.raises(ParseError, match="too many flags"):
        parse_command(b"t1 STORE 1 FLAGS" + b" k" * 1001)


# --- Fuzzing: nothing but ParseError, whatever the bytes ----------------------------------

WIRE_SAFE = re.compile(r"[\x20-\x7e]{1,80}")
TAG_SHAPE = re.compile(r"[\x21-\x7e]+")


def parse_or_refuse(data, utf8=False):
    try:
        return parse_command(data, utf8=utf8)
    except ParseError as error:
        assert WIRE_SAFE.fullmatch(error.message), error.message
        assert error.tag is None or (TAG_SHAPE.fullmatch(error.tag) and data.startswith(error.tag.encode()))
        assert error.status in ("BAD", "NO")
        return None


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_random_bytes(data, utf8):
    parse_or_refuse(data, utf8)
    parse_or_refuse(b"t1 " + data, utf8)


SAMPLES = [d for d, _ in VALID] + [b"t1 SEARCH " + s[0] for s in SEARCHES] + [
    b"t1 FETCH " + f[0] for f in FETCHES] + [a[0] for a in APPENDS]

edits = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]),
              st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=4)),
    min_size=1, max_size=5,
)


@FUZZ
@given(st.sampled_from(SAMPLES), edits, st.booleans())
def test_fuzz_mutated_commands(sample, operations, utf8):
    data = bytearray(sample)
    for operation, position, chunk in operations:
        position %= len(data) + 1
        if operation == "insert":
            data[position:position] = chunk
        elif operation == "delete":
            del data[position : position + len(chunk)]
        elif operation == "replace":
            data[position : position + len(chunk)] = chunk
        elif operation == "truncate":
            del data[position:]
        else:
            data[position:position] = data[position : position + 8]
    parse_or_refuse(bytes(data), utf8)


TOKENS = [
    b"t1", b"UID", b"FETCH", b"SEARCH", b"STORE", b"APPEND", b"LIST", b"SELECT", b"SORT", b"THREAD",
    b"(", b")", b"1:*", b"$", b"*", b"5:2", b"NOT", b"OR", b"ALL", b"BODY[", b"]", b"BODY.PEEK[1.2.MIME]",
    b"HEADER.FIELDS", b"<0.10>", b"{3}\r\nabc", b"{3+}\r\nabc", b"~{2}\r\na\x00", b"{99}\r\n", b'"q\\"x"',
    b"\\Seen", b"NIL", b"RETURN", b"CHARSET", b"UTF-8", b"UTF8", b"(LAZY)", b"PREVIEW", b"MODSEQ",
    b'"/flags/\\\\seen"', b"priv", b"CHANGEDSINCE", b"VANISHED", b"QRESYNC", b"CONDSTORE", b"USE",
    b'"17-Jul-1996 02:44:25 -0700"', b"1-Feb-1994", b"&U,BTFw-", b"\r\n", b"", b"INBOX", b"FLAGS",
    b"+FLAGS.SILENT", b"UNCHANGEDSINCE", b"STATUS", b"MESSAGES", b"SUBSCRIBED", b"RECURSIVEMATCH",
]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=25), st.sampled_from([b" ", b""]), st.booleans())
def test_fuzz_token_soup(tokens, separator, utf8):
    parse_or_refuse(b"t1 " + separator.join(tokens), utf8)


@FUZZ
@given(st.binary(max_size=60), st.integers(min_value=0, max_value=2**40), st.none() | st.integers(0, 5000))
def test_fuzz_literal_announcement(line, max_literal, max_nonsync):
    for candidate in (line, line + b"{5}\r\n", line + b"~{" + line[:5] + b"}\r\n", line + b"\r\n"):
        try:
            literal = literal_announcement(candidate, max_literal=max_literal, max_nonsync=max_nonsync)
        except LiteralTooBig as error:
            assert error.code == "TOOBIG" and WIRE_SAFE.fullmatch(error.message)
        else:
            assert literal is None or 0 <= literal.size <= max_literal

"""Scripts × messages → actions: the interpreter alone (pure, no database)."""
import datetime

import pytest

from sieve import matching
from sieve.compiler import compile_script
from sieve.interpreter import (
    Discard,
    Environment,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveRuntimeError,
    Vacation,
    run,
    run_all,
)
from sieve.message import MessageView

PLAIN = (
    b"From: Mallory <mallory@elsewhere.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Cc: bob@example.test, carol+lists@example.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Tue, 03 Jun 2025 14:30:00 +0200\r\n"
    b"Message-ID: <m1@elsewhere.test>\r\n"
    b"\r\n"
    b"Hello Alice,\r\nthe numbers are in.\r\n"
)
LIST_MAIL = (
    b"From: announce@lists.example.org\r\n"
    b"To: alice+lists@example.test\r\n"
    b"Subject: [announce] =?utf-8?q?R=C3=A9union?= on Friday\r\n"
    b"List-Id: Announcements <announce.lists.example.org>\r\n"
    b"Received: from a\r\nReceived: from b\r\nReceived: from c\r\n"
    b"\r\n"
    b"See you there.\r\n"
)
MULTIPART = (
    b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: pictures\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    b"--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>The <b>invoice</b> is attached</p>\r\n"
    b"--XX\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
    b"--XX--\r\n"
)
MESSAGES = {"plain": PLAIN, "list": LIST_MAIL, "multipart": MULTIPART}
NOW = datetime.datetime(2025, 6, 3, 12, 0, tzinfo=datetime.timezone.utc)


def outcome(script, message="plain", *, mail_from="mallory@elsewhere.test", rcpt_to="alice@example.test",
            spam=None, folders=("INBOX", "Work", "Lists")):
    environment = Environment(
        message=MessageView(MESSAGES[message]),
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        now=NOW,
        spam_percent=spam,
        mailbox_exists=lambda name: name in folders,
    )
    return run(compile_script(script), environment)


def delivered(result):
    """What a table row compares: stored folders with flags, and the other actions."""
    others = [a for a in result.actions if not isinstance(a, (Keep, FileInto))]
    return result.deliveries(), others


R = 'require ["fileinto", "imap4flags", "variables", "envelope", "subaddress", "relational", "comparator-i;ascii-numeric", "body", "date", "index", "regex", "copy", "reject", "ereject", "vacation", "spamtest", "spamtestplus", "mailbox"];\n'
INBOX = [("INBOX", ())]

TABLE = [
    # (name, script, message, expected deliveries, expected other actions)
    ("empty script keeps", "", "plain", INBOX, []),
    ("keep", "keep;", "plain", INBOX, []),
    ("discard", "discard;", "plain", [], [Discard()]),
    ("fileinto on subject", R + 'if header :contains "subject" "report" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("no match keeps", R + 'if header :is "subject" "report" { fileinto "Work"; }', "plain", INBOX, []),
    ("case-insensitive by default", R + 'if header :is "SUBJECT" "quarterly REPORT" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("i;octet is exact", R + 'if header :is :comparator "i;octet" "subject" "quarterly report" { fileinto "Work"; }', "plain", INBOX, []),
    ("encoded words decoded", R + 'if header :contains "subject" "Réunion" { fileinto "Lists"; }', "list", [("Lists", ())], []),
    ("matches with variables", R + 'if header :matches "subject" "[*] *" { fileinto "Lists/${1}"; }', "list", [("Lists/announce", ())], []),
    ("regex captures", R + 'if header :regex "subject" "^\\\\[([a-z]+)\\\\]" { fileinto "${1}"; }', "list", [("announce", ())], []),
    ("fileinto :copy keeps too", R + 'fileinto :copy "Work";', "plain", [("Work", ()), ("INBOX", ())], []),
    ("same folder twice is one copy", R + 'fileinto "Work"; fileinto "Work"; keep; keep;', "plain", [("Work", ()), ("INBOX", ())], []),
    ("flags on fileinto", R + 'fileinto :flags ["\\\\Seen", "$Report"] "Work";', "plain", [("Work", ("\\Seen", "$Report"))], []),
    ("internal flags for implicit keep", R + 'addflag "\\\\flagged"; addflag "$x $X";', "plain", [("INBOX", ("\\Flagged", "$x"))], []),
    ("removeflag and hasflag", R + 'setflag ["a", "b"]; removeflag "a"; if hasflag :is "b" { fileinto "Work"; }', "plain", [("Work", ("b",))], []),
    ("flag variable", R + 'addflag "f" "\\\\Seen"; fileinto :flags "${f}" "Work";', "plain", [("Work", ("\\Seen",))], []),
    ("address :domain", R + 'if address :is :domain "from" "elsewhere.test" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("address :localpart over cc", R + 'if address :localpart :is "cc" "bob" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("subaddress :detail", R + 'if address :detail "cc" "lists" { fileinto "Lists"; }', "plain", [("Lists", ())], []),
    ("subaddress :user", R + 'if address :user "cc" "carol" { fileinto "Lists"; }', "plain", [("Lists", ())], []),
    ("envelope :detail", R + 'if envelope :detail "to" "lists" { fileinto "Lists"; }', "plain-plus", [("Lists", ())], []),
    ("envelope from", R + 'if envelope :is :domain "from" "elsewhere.test" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("exists", R + 'if exists "list-id" { fileinto "Lists"; }', "list", [("Lists", ())], []),
    ("exists all", R + 'if exists ["list-id", "x-nope"] { fileinto "Lists"; }', "list", INBOX, []),
    ("size over", R + "if size :over 100 { fileinto \"Work\"; }", "plain", [("Work", ())], []),
    ("size under", R + "if size :under 1K { fileinto \"Work\"; }", "plain", [("Work", ())], []),
    ("allof anyof not", R + 'if allof (exists "from", anyof (false, not exists "list-id")) { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("elsif else", R + 'if false { discard; } elsif false { discard; } else { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("stop ends the script", R + 'fileinto "Work"; stop; fileinto "Lists";', "plain", [("Work", ())], []),
    ("count of received", R + 'if header :count "ge" :comparator "i;ascii-numeric" "received" "3" { fileinto "Lists"; }', "list", [("Lists", ())], []),
    ("value gt", R + 'if header :value "gt" :comparator "i;ascii-numeric" "x-none" "3" { fileinto "Lists"; }', "list", INBOX, []),
    ("index :last", R + 'if header :index 1 :last :is "received" "from c" { fileinto "Lists"; }', "list", [("Lists", ())], []),
    ("body text of html", R + 'if body :text :contains "invoice is attached" { fileinto "Work"; }', "multipart", [("Work", ())], []),
    ("body content type", R + 'if body :content "application/pdf" :contains "%PDF" { fileinto "Work"; }', "multipart", [("Work", ())], []),
    ("body raw", R + 'if body :raw :contains "JVBERi0" { fileinto "Work"; }', "multipart", [("Work", ())], []),
    ("date in its zone", R + 'if date :originalzone :is "date" "hour" "14" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("date in utc", R + 'if date :zone "+0000" :is "date" "time" "12:30:00" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("currentdate", R + 'if currentdate :value "ge" "date" "2025-01-01" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("weekday", R + 'if currentdate :is "weekday" "2" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("set modifiers", R + 'set :upper :length "n" "abcd"; set :upperfirst "w" "work"; if string :is "${n}" "4" { fileinto "${w}"; }', "plain", [("Work", ())], []),
    ("string :count skips empty", R + 'if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("unknown variable is empty", R + 'fileinto "Work${nope}";', "plain", [("Work", ())], []),
    ("mailboxexists", R + 'if mailboxexists "Work" { fileinto "Work"; } if mailboxexists "Nope" { discard; }', "plain", [("Work", ())], []),
    ("spamtest untested", R + 'if spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "Work"; }', "plain", [("Work", ())], []),
    ("spamtest high", R + 'if spamtest :value "ge" :comparator "i;ascii-numeric" "8" { fileinto "Junk"; }', "spam-90", [("Junk", ())], []),
    ("spamtest percent", R + 'if spamtest :percent :value "gt" :comparator "i;ascii-numeric" "50" { fileinto "Junk"; }', "spam-90", [("Junk", ())], []),
    ("redirect", R + 'redirect "carol@elsewhere.test";', "plain", [], [Redirect("carol@elsewhere.test")]),
    ("redirect :copy", R + 'redirect :copy "carol@elsewhere.test";', "plain", INBOX, [Redirect("carol@elsewhere.test", copy=True)]),
    ("redirect twice is once", R + 'redirect "c@x.test"; redirect "C@x.test";', "plain", [], [Redirect("c@x.test")]),
    ("reject", R + 'reject "go away";', "plain", [], [Reject("go away")]),
    ("ereject", R + 'ereject "no";', "plain", [], [Reject("no", extended=True)]),
    ("vacation defaults", R + 'vacation "away";', "plain", INBOX,
     [Vacation("away", handle=Vacation.__dataclass_fields__["handle"].default or "*")]),
]


def _env_args(message):
    if message == "plain-plus":
        return "plain", {"rcpt_to": "alice+lists@example.test"}
    if message == "spam-90":
        return "plain", {"spam": 90}
    return message, {}


@pytest.mark.parametrize("name, script, message, folders, others", TABLE, ids=[row[0] for row in TABLE])
def test_script_table(name, script, message, folders, others):
    message, extra = _env_args(message)
    result = outcome(script, message, **extra)
    got_folders, got_others = delivered(result)
    assert got_folders == folders
    if others and isinstance(others[0], Vacation):
        [vacation] = got_others
        assert (vacation.reason, vacation.days, len(vacation.handle)) == ("away", 7, 32)
    else:
        assert got_others == others


RUNTIME_ERRORS = [
    # (script, message)
    (R + 'redirect "a@x.test"; redirect "b@x.test"; redirect "c@x.test"; redirect "d@x.test"; redirect "e@x.test";',
     "line 2: more than 4 redirects"),
    (R + 'reject "no"; keep;', "reject cannot be combined with keep"),
    (R + 'reject "a";\nreject "b";', "line 3: only one reject or ereject may be used"),
    (R + 'vacation "a";\nvacation "b";', "line 3: only one vacation action may be used"),
    (R + 'vacation "a"; reject "b";', "reject cannot be combined with vacation"),
    (R + 'redirect "not an address";', 'line 2: redirect to an invalid address "not an address"'),
    (R + 'set "x" "("; if header :regex "subject" "${x}" { keep; }', "missing )"),
    ('require "include"; include "nope";', 'line 1: included personal script "nope" does not exist'),
]


@pytest.mark.parametrize("script, message", RUNTIME_ERRORS)
def test_runtime_errors(script, message):
    with pytest.raises(SieveRuntimeError) as caught:
        outcome(script)
    assert message in str(caught.value)


def test_a_regex_that_backtracks_forever_fails_the_script(monkeypatch):
    monkeypatch.setattr(matching, "REGEX_TIMEOUT", 0.05)
    environment = Environment(message=MessageView(b"Subject: " + b"a" * 40 + b"!\r\n\r\n"))
    program = compile_script('require "regex"; if header :regex "subject" "^(a|aa)+$" { discard; }')
    with pytest.raises(SieveRuntimeError, match="took too long"):
        run(program, environment)


# --- include (RFC 6609) ------------------------------------------------------------------------


def test_include_once_optional_return_and_globals():
    scripts = {
        ("personal", "lists"): 'require ["include", "variables", "fileinto"]; global "folder"; '
                               'if exists "list-id" { fileinto "${folder}"; return; } discard;',
        ("global", "spam"): 'require "fileinto"; fileinto "Junk";',
    }
    environment = Environment(
        message=MessageView(LIST_MAIL), load_script=lambda location, name: scripts.get((location, name))
    )
    main = compile_script(
        'require ["include", "variables"]; global "folder"; set "folder" "Lists";\n'
        'include "lists"; include :once "lists"; include :optional "missing"; include :global "spam";'
    )
    result = run(main, environment)
    assert result.deliveries() == [("Lists", ()), ("Junk", ())]


def test_include_loops_are_errors():
    environment = Environment(
        message=MessageView(PLAIN), load_script=lambda location, name: 'require "include"; include "self";'
    )
    with pytest.raises(SieveRuntimeError, match="loops back"):
        run(compile_script('require "include"; include "self";'), environment, name="self")


def test_before_user_after_scripts_share_one_execution():
    environment = Environment(message=MessageView(PLAIN))
    before = compile_script('require "imap4flags"; addflag "$checked";')
    user = compile_script('require "fileinto"; fileinto "Work";')
    after = compile_script('require ["fileinto", "copy"]; if header :contains "subject" "report" { fileinto :copy "Archive"; }')
    result = run_all([(before, "before", "global"), (user, "main", "personal"), (after, "after", "global")], environment)
    # The user script does not require imap4flags, so its fileinto takes no flags.
    assert result.deliveries() == [("Work", ()), ("Archive", ())]
    stopped = run_all([(compile_script("stop;"), "before", "global"), (user, "main", "personal")], environment)
    assert stopped.deliveries() == INBOX

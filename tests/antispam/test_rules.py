"""Content rules (antispam.rules): one row per case, the message and the hits expected."""
import pytest

from antispam import rules
from antispam.rules import Context, evaluate

DATE = "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
MSGID = "Message-ID: <r1@sender.test>\r\n"


def mail(*, headers="", subject="Lunch on Friday", body="See you at noon.\r\n", html=None, plain=True,
         date=True, msgid=True, author="Sam <sam@sender.test>"):
    head = f"From: {author}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
    head += (DATE if date else "") + (MSGID if msgid else "") + headers
    if html is None:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()
    if not plain:
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()
    return (
        head + 'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
        + "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
        + "\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b--\r\n"
    ).encode()


def names(raw, context=Context()):
    return sorted(hit.name for hit in evaluate(raw, context))


ours = Context(is_local_domain=lambda domain: domain == "example.test")

CASES = [
    ("a plain personal message", mail(), Context(), []),
    ("GTUBE", mail(body="test XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"), Context(), ["GTUBE"]),
    ("no Date", mail(date=False), Context(), ["MISSING_DATE"]),
    ("no Message-ID", mail(msgid=False), Context(), ["MISSING_MESSAGE_ID"]),
    ("Reply-To elsewhere", mail(headers="Reply-To: <collect@other.example>\r\n"), Context(), ["FROM_REPLYTO_MISMATCH"]),
    ("Reply-To a sibling domain", mail(headers="Reply-To: <help@lists.sender.test>\r\n"), Context(), []),
    ("our domain, unverified", mail(author="Boss <boss@example.test>"), ours, ["FORGED_LOCAL_DOMAIN"]),
    ("our domain, aligned", mail(author="Boss <boss@example.test>"), Context(ours.is_local_domain, aligned=True), []),
    ("our domain, logged-in client", mail(author="Boss <boss@example.test>"), Context(ours.is_local_domain, authenticated=True), []),
    ("capitals", mail(subject="READ THIS IMPORTANT NOTICE"), Context(), ["SUBJECT_ALL_CAPS"]),
    ("short capitals are fine", mail(subject="FYI: PTO"), Context(), []),
    ("spammy subject", mail(subject="You have WON a lottery"), Context(), ["SUBJECT_SPAMMY"]),
    ("shouting subject", mail(subject="Cheap watches $$$"), Context(), ["SUBJECT_SPAMMY"]),
    ("spammy body", mail(body="Act now! Claim your cash bonus, risk free.\r\n"), Context(), ["BODY_SPAMMY"]),
    ("link text shows another domain",
     mail(html='<p>Log in at <a href="https://evil.example/login">https://www.bank.example/</a></p>'), Context(),
     ["URL_TEXT_MISMATCH"]),
    ("link text shows the same site",
     mail(html='<a href="https://www.bank.example/x?y=1">bank.example</a> <a href="https://bank.example">Click</a>'),
     Context(), []),
    ("punycode Cyrillic look-alike",
     mail(body="Verify at https://xn--pypal-4ve.example/ today\r\n"), Context(), ["URL_LOOKALIKE_DOMAIN"]),
    ("mixed-script IDN written out",
     mail(html='<a href="https://p\u0430ypal.example/">here</a>'), Context(), ["URL_LOOKALIKE_DOMAIN"]),
    ("digit look-alike of the sender's domain",
     mail(author="Bank <news@bank.example>", body="Sign in: https://bamk.example/ or https://b4nk.example https://banl<.example\r\n"),
     Context(), []),
    ("digit look-alike of a shown domain",
     mail(html='<a href="https://paypa1.example/">paypal.example</a>'), Context(),
     ["URL_LOOKALIKE_DOMAIN", "URL_TEXT_MISMATCH"]),
    ("an accented IDN is not a look-alike", mail(body="Menu: https://xn--caf-dma.example/\r\n"), Context(), []),
    ("bare IP link", mail(body="Download http://192.0.2.7/file now\r\n"), Context(), ["URL_IP_ADDRESS"]),
    ("HTML only", mail(html="<p>Hello there</p>", plain=False), Context(), ["HTML_ONLY"]),
    ("HTML only with hidden text",
     mail(html='<p>Buy</p><div style="display:none">lorem ipsum dolor sit amet consectetur adipiscing</div>', plain=False),
     Context(), ["HTML_HIDDEN_TEXT", "HTML_ONLY"]),
    ("zero-size text",
     mail(html='<span style="font-size:0px">invisible words to poison the filter here</span>'), Context(), ["HTML_HIDDEN_TEXT"]),
    ("white on white",
     mail(html='<font color="#ffffff">these words are white on a white page, unseen</font>'), Context(), ["HTML_HIDDEN_TEXT"]),
    ("a short hidden preheader is fine", mail(html='<div style="display:none">Hi</div><p>Hello</p>'), Context(), []),
]


@pytest.mark.parametrize("raw,context,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rules(raw, context, expected):
    assert names(raw, context) == expected


def test_each_hit_explains_itself_in_plain_words():
    raw = mail(html='<a href="https://evil.example/">www.bank.example</a>', headers="Reply-To: <x@other.example>\r\n")
    assert [(h.name, h.points, h.explanation) for h in evaluate(raw)] == [
        ("FROM_REPLYTO_MISMATCH", 1.0, "replies would go to x@other.example, not to the sender's domain sender.test"),
        ("URL_TEXT_MISMATCH", 3.0, "a link shows www.bank.example but leads to evil.example"),
    ]
    looks = evaluate(mail(body="https://xn--pypal-4ve.example/\r\n"))
    assert looks[0].explanation == "a link goes to p\u0430ypal.example, a name made to look like paypal.example"


def test_every_rule_has_points_and_an_explanation():
    for name, (points, explanation) in rules.RULES.items():
        assert points and explanation and name.isupper()


def test_broken_messages_raise_nothing():
    for raw in (b"", b"\xff\xfe garbage", b"Subject: =?bogus?Q?x?=\r\nContent-Type: text/html; charset=nope\r\n\r\n<a href=http://[::1>x</a>"):
        evaluate(raw)


def test_raw_utf8_header_fields_are_read_as_utf8():
    """RFC 6532 (SMTPUTF8): header fields in raw UTF-8 reach the rules and Bayes as words,
    not replacement characters; an old 8-bit Latin-1 subject is read as Latin-1."""
    from antispam import bayes

    raw = mail(
        author="Jörg Müller <jörg@bücher.example>", subject="GRÜSSE AUS MÜNCHEN: GEWINNER", body="Grüße, Jörg\r\n",
        headers="Reply-To: Jörg <jörg@bücher.example>\r\n",
    )
    found = rules.facts(raw)
    assert found.subject == "GRÜSSE AUS MÜNCHEN: GEWINNER"
    assert found.from_addresses == ["jörg@bücher.example"] and found.from_domain == "bücher.example"
    assert found.reply_to == ["jörg@bücher.example"]
    assert "SUBJECT_ALL_CAPS" in names(raw, Context())
    tokens = bayes.tokens(raw)
    assert tokens[:5] == ["s:grüsse", "s:aus", "s:münchen", "s:gewinner", "f:bücher.example"]
    assert "grüße" in tokens and not any("\ufffd" in t for t in tokens)
    latin1 = b"From: sam@sender.test\r\nSubject: Caf\xe9 cr\xe8me\r\n\r\nhi\r\n"
    assert rules.facts(latin1).subject == "Café crème"
    folded = b"From: sam@sender.test\r\nSubject: Sch\xc3\xb6ne\r\n Gr\xc3\xbc\xc3\x9fe\r\n\r\nhi\r\n"
    assert rules.facts(folded).subject == "Schöne Grüße"

"""Generate the labelled spam/ham corpus: `python tests/data/spam-corpus/generate.py`
writes spam.mbox and ham.mbox beside this script; tests import messages() directly.

Every message is made up here from the word lists below with a fixed seed: no real
person, address or mail is in it. Domains are under .example (RFC 2606). The two kinds
share most of their vocabulary on purpose, and some ham talks about money, offers or
passwords while some spam is written in plain office words, so the filter has to learn.
"""
import random
import sys
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20261201
COUNT = 200  # of each kind

FIRST = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatma", "Gus", "Hana", "Ivo", "Jun", "Kofi", "Lea", "Milo", "Nia", "Omar", "Pia"]
HAM_DOMAINS = ["northwind.example", "riverside-school.example", "cityclinic.example", "acme-tools.example",
               "hikingclub.example", "bookshop.example", "municipal.example", "opensrc.example"]
SPAM_DOMAINS = ["mega-deals.example", "prize-center.example", "secure-verify.example", "pharma-direct.example",
                "crypto-gains.example", "lovematch.example", "quickloans.example", "winner-notice.example"]
COMMON = ["the", "and", "please", "today", "this", "week", "your", "you", "we", "our", "with", "for", "here",
          "update", "information", "thanks", "regards", "next", "time", "more", "details", "link", "below",
          "team", "new", "account", "offer", "order", "free", "now", "price", "see", "attached", "meeting"]
HAM_TOPICS = {
    "meeting": ["agenda", "minutes", "room", "calendar", "tuesday", "thursday", "slides", "quarterly", "review",
                "project", "deadline", "draft", "feedback", "colleagues", "schedule", "notes", "roadmap"],
    "family": ["dinner", "weekend", "kids", "birthday", "grandma", "garden", "photos", "holiday", "recipe",
               "soccer", "practice", "pick", "school", "cake", "visit", "trip", "train"],
    "code": ["patch", "review", "merge", "branch", "tests", "failing", "build", "release", "changelog", "issue",
             "bug", "refactor", "module", "deploy", "staging", "logs", "commit"],
    "club": ["hike", "trail", "members", "newsletter", "summit", "boots", "map", "carpool", "volunteers",
             "membership", "fees", "season", "route", "picnic", "weather", "forecast"],
    "billing": ["invoice", "receipt", "payment", "due", "statement", "reference", "quarter", "accounting",
                "expenses", "reimbursement", "budget", "approved", "purchase", "supplier", "delivery"],
}
SPAM_TOPICS = {
    "pharma": ["pills", "pharmacy", "prescription", "discount", "generic", "meds", "cheap", "overnight",
               "shipping", "viagra", "weight", "miracle", "doctors", "hate", "secret", "trick"],
    "lottery": ["winner", "won", "prize", "claim", "lottery", "million", "congratulations", "selected",
                "lucky", "jackpot", "beneficiary", "transfer", "fee", "release", "funds", "notification"],
    "phish": ["verify", "suspended", "unusual", "activity", "login", "confirm", "identity", "password",
              "immediately", "restricted", "security", "locked", "validate", "credentials", "expire"],
    "crypto": ["bitcoin", "crypto", "profit", "invest", "returns", "guaranteed", "trading", "robot",
               "passive", "income", "millionaire", "wealth", "opportunity", "exclusive", "earn"],
    "dating": ["singles", "lonely", "chat", "hot", "tonight", "profile", "photos", "match", "dating",
               "private", "meet", "waiting", "girls", "flirt", "naughty"],
    "loans": ["loan", "approved", "credit", "debt", "consolidate", "rates", "lowest", "cash", "instant",
              "bad", "lenders", "apply", "qualify", "refinance", "mortgage"],
}
HAM_SUBJECTS = ["Notes from {x}", "Re: {x} on Thursday", "{x} update", "Question about the {x}", "Fwd: {x}",
                "Our {x} plans", "{x} and {y}", "Reminder: {x}"]
SPAM_SUBJECTS = ["{X} {Y} NOW", "You have been selected: {x}", "Re: your {x}", "Exclusive {x} for you!!!",
                 "{x} {y} - act now", "Last chance for {x}", "Important: {x} {y}", "{x}"]


def _sentence(rng, topic_words, n):
    words = [rng.choice(topic_words) if rng.random() < 0.45 else rng.choice(COMMON) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _body(rng, topic_words, *, spam):
    paragraphs = []
    for _ in range(rng.randint(1, 4)):
        paragraphs.append(" ".join(_sentence(rng, topic_words, rng.randint(6, 16)) for _ in range(rng.randint(1, 4))))
    if spam and rng.random() < 0.7:
        paragraphs.append(f"Visit https://{rng.choice(SPAM_DOMAINS)}/{rng.choice(topic_words)}?id={rng.randint(1000, 9999)}")
    if not spam and rng.random() < 0.3:
        paragraphs.append(f"See https://{rng.choice(HAM_DOMAINS)}/{rng.choice(topic_words)}")
    return "\n\n".join(paragraphs)


def _message(rng, index, *, spam):
    topics = SPAM_TOPICS if spam else HAM_TOPICS
    name = rng.choice(sorted(topics))
    words = topics[name]
    # Some messages borrow the other kind's words: the hard cases.
    if rng.random() < 0.15:
        other = SPAM_TOPICS if not spam else HAM_TOPICS
        words = words + other[rng.choice(sorted(other))][:5]
    domain = rng.choice(SPAM_DOMAINS if spam else HAM_DOMAINS)
    sender = f"{rng.choice(FIRST)} <{rng.choice(FIRST).lower()}{rng.randint(1, 99) if spam else ''}@{domain}>"
    x, y = rng.choice(words), rng.choice(words)
    template = rng.choice(SPAM_SUBJECTS if spam else HAM_SUBJECTS)
    subject = template.format(x=x, y=y, X=x.upper(), Y=y.upper())
    when = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=rng.randint(0, 500_000))
    body = _body(rng, words, spam=spam)
    kind = "spam" if spam else "ham"
    head = (
        f"From: {sender}\nTo: Reader <reader@mail.example>\nSubject: {subject}\n"
        f"Date: {format_datetime(when)}\nMessage-ID: <{kind}{index}.{rng.randint(10**6, 10**7)}@{domain}>\n"
        "MIME-Version: 1.0\n"
    )
    if rng.random() < (0.5 if spam else 0.2):
        paragraphs = "".join(f"<p>{p}</p>" for p in body.split("\n\n"))
        return head + "Content-Type: text/html; charset=utf-8\n\n" + f"<html><body>{paragraphs}</body></html>\n"
    return head + "Content-Type: text/plain; charset=utf-8\n\n" + body + "\n"


def messages(kind, count=COUNT, seed=SEED):
    """`count` messages of `kind` ("spam" or "ham") as bytes with CRLF line ends."""
    rng = random.Random(f"{seed}-{kind}")
    return [_message(rng, i, spam=kind == "spam").replace("\n", "\r\n").encode() for i in range(count)]


def write(directory):
    for kind in ("spam", "ham"):
        with open(Path(directory) / f"{kind}.mbox", "wb") as out:
            for raw in messages(kind):
                out.write(b"From generator@corpus.example Thu Jan  1 00:00:00 2026\n")
                for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
                    out.write((b">" + line if line.startswith(b"From ") else line) + b"\n")
                out.write(b"\n")


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)

"""Content-filter scoring speed: a thousand messages through the filter, messages/s.

What is timed, per message: parsing, the content rules and Bayes tokens
(antispam.checks.assess_content) and one recipient's verdict (antispam.policy.decide:
Bayes lookup in the database, allow/block lists, reputation, thresholds) — the work
the filter adds to a delivery beyond the sender-authentication DNS lookups, which
depend on remote servers and are left out. The site-wide filter is first trained on
the generated corpus (tests/data/spam-corpus); the scored messages are 500 spam and
500 ham made by the same generator with another seed. The reader has a Sent folder of
--sent messages (written to made-up people, a few of them the corpus's senders), as a
real user would. SQLite in a temporary data dir.

Wall time depends on what else runs on the machine; the CPU time of this process
(time.process_time) is printed too, and is what the budget per message is about.

Usage: .venv/bin/python bench/spam.py [--count 1000] [--sent 2000]
"""
import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--sent", type=int, default=2000, help="messages in the reader's Sent folder")
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="bench-spam-")
    try:
        os.environ["MAILSUITE_DATA_DIR"] = data_dir
        os.environ.pop("DATABASE_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        run(args.count, args.sent)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def sent_messages(count):
    """Mail the reader wrote: one or two recipients each, mostly made-up people."""
    for i in range(count):
        to = f"Person {i} <person{i}@contacts{i % 50}.example>"
        if i % 7 == 0:
            to += f", Team <team{i % 13}@northwind.example>"
        yield (
            f"From: Reader <reader@bench.example>\r\nTo: {to}\r\nSubject: note {i}\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <sent{i}@bench.example>\r\n\r\n"
            f"Just a short note number {i}.\r\n"
        ).encode()


def run(count, sent):
    from accounts import actions
    from antispam import bayes, checks, policy
    from mailstore.actions import append_many

    spec = importlib.util.spec_from_file_location("spam_corpus", ROOT / "tests/data/spam-corpus/generate.py")
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    actions.create_domain("bench.example")
    account = actions.create_account("reader@bench.example")
    for kind in ("spam", "ham"):
        bayes.learn_batch(None, [(bayes.tokens(r), bayes.digest(r)) for r in corpus.messages(kind)], spam=kind == "spam")
    batch = []
    for raw in sent_messages(sent):
        batch.append((raw, ("\\Seen",), None))
        if len(batch) == 500:
            append_many(account, "Sent", batch)
            batch = []
    if batch:
        append_many(account, "Sent", batch)
    messages = [(r, True) for r in corpus.messages("spam", count // 2, seed=7)]
    messages += [(r, False) for r in corpus.messages("ham", count - count // 2, seed=7)]
    results = {"spf": "pass", "dkim": [], "dmarc": "none", "arc": "none"}
    right = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for raw, is_spam in messages:
        assessment = checks.assess_content(raw, results=results)
        decision = policy.decide(assessment, [account])[account.pk]
        right += (decision.action != "none") == is_spam
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"scored {len(messages)} messages in {elapsed:.2f} s: {len(messages) / elapsed:.0f} messages/s "
          f"({elapsed * 1000 / len(messages):.2f} ms each; CPU {cpu * 1000 / len(messages):.2f} ms each, "
          f"{len(messages) / cpu:.0f} messages per CPU second); {right} of {len(messages)} judged right at the "
          f"default thresholds; {sum(len(r) for r, _ in messages) // len(messages)} bytes a message on average; "
          f"Sent folder {sent} messages; load average {load}")


if __name__ == "__main__":
    main()

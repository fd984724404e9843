"""Content-filter scoring speed: a thousand messages through the filter, messages/s.

What is timed, per message: parsing, the content rules and Bayes tokens
(antispam.checks.assess_content) and one recipient's verdict (antispam.policy.decide:
Bayes lookup in the database, allow/block lists, reputation, thresholds) — the work
the filter adds to a delivery beyond the sender-authentication DNS lookups, which
depend on remote servers and are left out. The site-wide filter is first trained on
the generated corpus (tests/data/spam-corpus); the scored messages are 500 spam and
500 ham made by the same generator with another seed. SQLite in a temporary data dir.

Usage: .venv/bin/python bench/spam.py [--count 1000]
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
        run(args.count)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(count):
    from accounts import actions
    from antispam import bayes, checks, policy

    spec = importlib.util.spec_from_file_location("spam_corpus", ROOT / "tests/data/spam-corpus/generate.py")
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    actions.create_domain("bench.example")
    account = actions.create_account("reader@bench.example")
    for kind in ("spam", "ham"):
        bayes.learn_batch(None, [(bayes.tokens(r), bayes.digest(r)) for r in corpus.messages(kind)], spam=kind == "spam")
    messages = [(r, True) for r in corpus.messages("spam", count // 2, seed=7)]
    messages += [(r, False) for r in corpus.messages("ham", count - count // 2, seed=7)]
    results = {"spf": "pass", "dkim": [], "dmarc": "none", "arc": "none"}
    right = 0
    started = time.perf_counter()
    for raw, is_spam in messages:
        assessment = checks.assess_content(raw, results=results)
        decision = policy.decide(assessment, [account])[account.pk]
        right += (decision.action != "none") == is_spam
    elapsed = time.perf_counter() - started
    print(f"scored {len(messages)} messages in {elapsed:.2f} s: {len(messages) / elapsed:.0f} messages/s "
          f"({elapsed * 1000 / len(messages):.2f} ms each); {right} of {len(messages)} judged right at the default thresholds")


if __name__ == "__main__":
    main()

"""The learning filter (antispam.bayes): combining, learning and unlearning, and its
precision and recall on the generated corpus (tests/data/spam-corpus)."""
import importlib.util
from pathlib import Path

import pytest

from antispam import bayes
from antispam.models import BayesCorpus, BayesToken

CORPUS = Path(__file__).resolve().parent.parent / "data" / "spam-corpus"


def corpus():
    spec = importlib.util.spec_from_file_location("spam_corpus", CORPUS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_checked_in_corpus_is_what_the_generator_makes(tmp_path):
    corpus().write(tmp_path)
    for kind in ("spam", "ham"):
        assert (tmp_path / f"{kind}.mbox").read_bytes() == (CORPUS / f"{kind}.mbox").read_bytes()


@pytest.mark.parametrize("probabilities,expected", [
    ([], 0.5), ([0.99, 0.98, 0.95], 1.0), ([0.01, 0.02, 0.05], 0.0), ([0.99, 0.01], 0.5),
])
def test_combining(probabilities, expected):
    assert bayes.combine(probabilities) == pytest.approx(expected, abs=0.01)


def test_tokens_mark_where_a_word_came_from():
    raw = (b"From: Sam <sam@shop.example>\r\nSubject: Cheap pills\r\nContent-Type: text/html\r\n\r\n"
           b'<p>Order <a href="https://pills.example/x">today</a> 2026 $99</p>')
    assert bayes.tokens(raw) == ["s:cheap", "s:pills", "f:shop.example", "u:pills.example", "order", "today", "$99"]


def test_it_learns_once_and_moves_a_message_on_a_change_of_mind(db, alice):
    raw = b"Subject: Cheap pills\r\n\r\nbuy pills now\r\n"
    assert bayes.learn_message(raw, spam=True, account_id=alice.pk)
    assert not bayes.learn_message(raw, spam=True, account_id=alice.pk)
    assert BayesCorpus.objects.get(account=alice).spam == 1
    assert bayes.learn_message(raw, spam=False, account_id=alice.pk)
    assert BayesCorpus.objects.filter(account=alice).values_list("spam", "ham").get() == (0, 1)
    assert BayesCorpus.objects.filter(account=None).values_list("spam", "ham").get() == (0, 1)
    assert BayesToken.objects.get(account=alice, token="pills").spam == 0
    assert BayesToken.objects.get(account=alice, token="pills").ham == 1


def test_no_verdict_until_it_learned_enough(db, alice):
    assert bayes.verdict(alice.pk, ["pills"]) is None


def test_precision_and_recall_on_the_generated_corpus(db):
    generator = corpus()
    spam, ham = generator.messages("spam"), generator.messages("ham")
    cut_spam, cut_ham = len(spam) * 6 // 10, len(ham) * 6 // 10
    bayes.learn_batch(None, [(bayes.tokens(raw), bayes.digest(raw)) for raw in spam[:cut_spam]], spam=True)
    bayes.learn_batch(None, [(bayes.tokens(raw), bayes.digest(raw)) for raw in ham[:cut_ham]], spam=False)
    true_positive = false_positive = false_negative = 0
    for raw, is_spam in [(r, True) for r in spam[cut_spam:]] + [(r, False) for r in ham[cut_ham:]]:
        said_spam = bayes.verdict(None, bayes.tokens(raw)).probability >= 0.5
        true_positive += said_spam and is_spam
        false_positive += said_spam and not is_spam
        false_negative += is_spam and not said_spam
    precision = true_positive / (true_positive + false_positive)
    recall = true_positive / (true_positive + false_negative)
    print(f"bayes on {len(spam) - cut_spam} spam + {len(ham) - cut_ham} ham held out: "
          f"precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.95 and recall >= 0.95


def test_a_verdict_names_its_most_telling_words(db):
    for i in range(12):
        bayes.learn(None, ["lottery", "winner", f"s{i}"], f"spam{i}", spam=True)
        bayes.learn(None, ["agenda", "minutes", f"h{i}"], f"ham{i}", spam=False)
    verdict = bayes.verdict(None, ["s:lottery", "lottery", "winner", "the"])
    assert verdict.probability > 0.95 and verdict.clues == ("lottery", "winner") and verdict.scope == "site"
    assert bayes.verdict(None, ["agenda"]).clues == ("agenda",)


def test_counts_learned_elsewhere_count_once_the_corpus_sizes_are_read_again(db, monkeypatch):
    """Another process's learning (here: rows changed behind this process's back) changes
    the corpus sizes; remembered token counts are dropped with them."""
    from django.db.models import F

    from antispam import lookups

    now = [1000.0]
    monkeypatch.setattr(lookups, "clock", lambda: now[0])
    for i in range(12):
        bayes.learn(None, ["lottery", f"s{i}"], f"spam{i}", spam=True)
        bayes.learn(None, ["agenda", f"h{i}"], f"ham{i}", spam=False)
    assert bayes.verdict(None, ["gnome"]).probability == 0.5  # never seen: remembered as (0, 0)
    BayesToken.objects.create(account=None, token="gnome", spam=12)
    BayesCorpus.objects.filter(account=None).update(spam=F("spam") + 1)
    assert bayes.verdict(None, ["gnome"]).probability == 0.5
    now[0] += lookups.TTL
    assert bayes.verdict(None, ["gnome"]).probability > 0.95


def test_only_the_first_tokens_are_scored(db, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(bayes, "MAX_SCORED_TOKENS", 2)
    for i in range(12):
        bayes.learn(None, ["lottery", f"s{i}"], f"spam{i}", spam=True)
        bayes.learn(None, ["agenda", f"h{i}"], f"ham{i}", spam=False)
    assert bayes.verdict(None, ["the", "a", "lottery"]).probability == 0.5
    with django_assert_num_queries(1):  # the corpus sizes are remembered; one query for the tokens
        assert bayes.verdict(None, ["lottery", "agenda", "x", "y"]).clues

"""The webmail's Python API (sieve.rules), the CLI and the admin."""
import datetime
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from sieve import actions, rules
from sieve.models import GlobalScript, SieveScript
from sieve.rules import Action, Condition, Filters, Forwarding, Rule, TooComplex, Vacation

pytestmark = pytest.mark.django_db

FILTERS = Filters(
    rules=[
        Rule("Invoices", [Condition("subject", "contains", "invoice"), Condition("from", "is", "billing@shop.test")],
             [Action("move", "Finance"), Action("flag", "\\Flagged")]),
        Rule("Big or noisy", [Condition("size", "over", "1000000"), Condition("header", "not_contains", "x", header="X-Mailer")],
             [Action("discard")], match_all=False),
        Rule("Off", [Condition("to", "contains", "old@")], [Action("reject", 'Gone "away"')], enabled=False),
    ],
    vacation=Vacation("Away", "Back on Monday.\nAlice", start=datetime.date(2025, 6, 1), end=datetime.date(2025, 6, 10)),
)


def test_settings_round_trip_through_sieve():
    text = rules.build_script(FILTERS)
    assert text.startswith(rules.MARKER + "\n")
    assert rules.parse_script(text) == FILTERS
    assert rules.is_simple(text)
    with_forwarding = Filters(rules=FILTERS.rules[:2], forwarding=Forwarding("alice@elsewhere.test", keep_copy=True))
    assert rules.parse_script(rules.build_script(with_forwarding)) == with_forwarding


@pytest.mark.parametrize(
    "text, reason",
    [
        ('require "fileinto"; fileinto "x";', "the script was not written by the simple editor"),
        (None, "the script was changed by hand"),
        (rules.MARKER + "\nkeep;\n", "line 2: only plain if blocks can be edited here"),
    ],
)
def test_other_scripts_are_too_complex(text, reason):
    if text is None:
        text = rules.build_script(FILTERS).replace("  fileinto", "    fileinto")
    with pytest.raises(TooComplex, match=reason):
        rules.parse_script(text)
    assert not rules.is_simple(text)


def test_settings_that_make_no_sense_are_refused():
    with pytest.raises(rules.RulesError, match="cannot be combined with forwarding"):
        rules.build_script(Filters(rules=FILTERS.rules, forwarding=Forwarding("a@b.test")))
    with pytest.raises(rules.RulesError, match="move needs a folder"):
        rules.build_script(Filters(rules=[Rule("x", [Condition("subject", "is", "a")], [Action("move")])]))


def test_load_and_save_the_active_script(alice):
    loaded = rules.load(alice)
    assert (loaded.name, loaded.text, loaded.filters) == ("filters", "", Filters())
    rules.save(alice, FILTERS)
    loaded = rules.load(alice)
    assert loaded.filters == FILTERS and loaded.too_complex == ""
    # Edited over ManageSieve (or raw): the simple editor says it cannot show it.
    rules.save_raw(alice, 'require "fileinto";\nfileinto "Archive";\n')
    loaded = rules.load(alice)
    assert loaded.filters is None and loaded.too_complex == "the script was not written by the simple editor"
    assert list(SieveScript.objects.values_list("name", "active")) == [("filters", True)]
    with pytest.raises(actions.InvalidScript) as caught:
        rules.save_raw(alice, "keep;\nfileinto")
    assert (caught.value.error.line, caught.value.error.column) == (2, 9)


def test_one_active_script_is_a_database_constraint(alice):
    from django.db import IntegrityError

    actions.put_script(alice, "a", "keep;", activate=True)
    actions.put_script(alice, "b", "keep;", activate=True)
    assert list(SieveScript.objects.filter(active=True).values_list("name", flat=True)) == ["b"]
    with pytest.raises(IntegrityError):
        SieveScript.objects.filter(name="a").update(active=True)


# --- The CLI ------------------------------------------------------------------------------------


def run(*args, stdin=""):
    """manage.py in this process: (stdout, stderr); a refusal raises CommandError."""
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr, stdin=io.StringIO(stdin))
    return stdout.getvalue(), stderr.getvalue()


def refused(*args):
    with pytest.raises(CommandError) as info:
        run(*args)
    return str(info.value)


def test_cli_check_put_activate_show(tmp_path):
    good, bad = tmp_path / "good.sieve", tmp_path / "bad.sieve"
    good.write_text('require "fileinto";\nfileinto "Archive";\n')
    bad.write_text('require "fileinto";\nfileinto "Archive"\n')
    assert run("sieve", "check", str(good)) == (f"{good}: valid\n", "")
    assert refused("sieve", "check", str(bad)) == "invalid script: line 3, column 1: missing ';' after command fileinto"
    run("domain", "add", "example.test")
    run("account", "add", "alice@example.test")
    run("sieve", "put", "alice@example.test", "main", "-", "--activate", stdin=good.read_text())
    assert run("sieve", "list", "alice@example.test") == ("main  (active)\n", "")
    assert run("sieve", "show", "alice@example.test") == (good.read_text(), "")
    assert refused("sieve", "delete", "alice@example.test", "main") == "the active script cannot be deleted"
    run("sieve", "deactivate", "alice@example.test")
    run("sieve", "global", "set", "spam", str(good), "--position", "after")
    assert run("sieve", "global", "list") == ("spam  (after)\n", "")
    assert refused("sieve", "show", "nobody@example.test") == "nobody@example.test: no such account"


@pytest.mark.sqlite_only  # manage.py runs on a data dir and SQLite file of its own in either pass
def test_cli_exit_status_and_output_as_scripts_see_them(manage, tmp_path):
    good, bad = tmp_path / "good.sieve", tmp_path / "bad.sieve"
    good.write_text('require "fileinto";\nfileinto "Archive";\n')
    bad.write_text('require "fileinto";\nfileinto "Archive"\n')
    checked = manage("sieve", "check", str(good))
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, f"{good}: valid\n", "")
    result = manage("sieve", "check", str(bad))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "CommandError: invalid script: line 3, column 1: missing ';' after command fileinto\n"
    piped = manage("sieve", "check", "-", stdin=good.read_text())
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "-: valid\n", "")
    unknown = manage("sieve", "show", "nobody@example.test")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "CommandError: nobody@example.test: no such account\n"


# --- The admin ----------------------------------------------------------------------------------


def test_the_admin_checks_scripts_and_saves_through_actions(admin_client, alice):
    url = reverse("admin:sieve_sievescript_add")
    response = admin_client.post(url, {"account": alice.pk, "name": "main", "text": "keep", "active": "on"})
    assert response.status_code == 200
    assert "line 1, column 5: missing &#x27;;&#x27; after command keep" in response.content.decode()
    response = admin_client.post(url, {"account": alice.pk, "name": "main", "text": "keep;", "active": "on"})
    assert response.status_code == 302
    script = SieveScript.objects.get()
    assert (script.name, script.active) == ("main", True)
    response = admin_client.post(reverse("admin:sieve_globalscript_add"), {"name": "g", "position": "before", "text": "keep;"})
    assert response.status_code == 302 and GlobalScript.objects.get().position == "before"
    assert admin_client.get(reverse("admin:sieve_sievescript_changelist")).status_code == 200

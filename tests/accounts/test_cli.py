"""The operator command line: manage.py domain | account | alias | redirect.

Personas: alice runs example.test, bob has a mailbox there, mallory is an outsider
whose mail lives at elsewhere.example (not served here).
"""
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import mailsuite.settings as project_settings
from accounts import actions
from accounts.management import cli
from accounts.models import Account, Alias, Domain, DomainAlias, Redirect
from mailstore.models import Folder

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "correct-horse-battery-staple"
GiB = 1024**3
MiB = 1024**2


class Terminal(io.StringIO):
    """Standard input as seen from an interactive shell."""

    def isatty(self):
        return True


def run(*args, stdin=""):
    """Run a command in-process; return (stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    stdin = stdin if isinstance(stdin, io.StringIO) else io.StringIO(stdin)
    call_command(*args, stdout=stdout, stderr=stderr, stdin=stdin)
    return stdout.getvalue(), stderr.getvalue()


def refused(*args, stdin=""):
    """Run a command that must fail; return its one-line reason."""
    with pytest.raises(CommandError) as info:
        run(*args, stdin=stdin)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture
def example(settings):
    settings.MAILSUITE_DEFAULT_QUOTA = GiB
    return actions.create_domain("example.test")


@pytest.fixture
def bob(example):
    return actions.create_account("bob@example.test", display_name="Bob")


def account(address):
    return Account.objects.select_related("domain").get(
        localpart=address.split("@")[0], domain__name=address.split("@")[1]
    )


# domain ---------------------------------------------------------------------------


def test_it_adds_a_domain_with_a_default_quota():
    out, err = run("domain", "add", "Example.TEST", "--quota", "2G")

    assert out == "added domain example.test\n"
    assert err == ""
    domain = Domain.objects.get()
    assert (domain.name, domain.default_quota, domain.active) == ("example.test", 2 * GiB, True)


def test_it_prints_only_errors_and_listings_at_verbosity_zero(example):
    assert run("domain", "-v", "0", "add", "quiet.example") == ("", "")
    assert run("domain", "-v", "0", "disable", "quiet.example") == ("", "")
    assert Domain.objects.get(name="quiet.example").active is False
    assert run("domain", "-v", "0", "list")[0].splitlines()[1].startswith("quiet.example")


def test_it_stores_an_idn_domain_in_ascii_and_lists_it_in_unicode(settings):
    settings.MAILSUITE_DEFAULT_QUOTA = GiB

    out, _ = run("domain", "add", "bücher.example")

    assert out == "added domain bücher.example (xn--bcher-kva.example)\n"
    assert Domain.objects.get().name == "xn--bcher-kva.example"
    out, _ = run("domain", "list")
    assert out == "bücher.example (xn--bcher-kva.example)  0 accounts  quota 1G  active\n"


def test_it_lists_domains_with_their_accounts_and_alias_domains(bob):
    actions.create_domain("quiet.example", default_quota=500 * MiB)
    actions.set_domain_active("quiet.example", False)
    actions.create_domain_alias("example.org", "example.test")

    out, _ = run("domain", "list")

    assert out.splitlines() == [
        "example.test   1 account              quota 1G    active",
        "quiet.example  0 accounts             quota 500M  disabled",
        "example.org    alias of example.test              active",
    ]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("localhost", "'localhost' is not a fully qualified domain name"),
        ("bad_name.example", "is not a valid domain name"),
        ("bad-.example", "is not a valid domain name"),
    ],
)
def test_it_refuses_a_malformed_domain(name, reason):
    assert reason in refused("domain", "add", name)
    assert not Domain.objects.exists()


def test_it_refuses_a_duplicate_domain(example):
    assert refused("domain", "add", "EXAMPLE.test") == "domain example.test already exists"


def test_it_refuses_a_domain_quota_that_is_not_a_size():
    assert refused("domain", "add", "example.test", "--quota", "12XB") == (
        "invalid quota: '12XB' is not a size (examples: 500M, 2G, 1048576)"
    )
    assert not Domain.objects.exists()


def test_it_removes_an_empty_domain(example):
    out, _ = run("domain", "remove", "example.test")

    assert out == "removed domain example.test\n"
    assert not Domain.objects.exists()


def test_it_keeps_a_domain_with_accounts_unless_forced(bob):
    assert refused("domain", "remove", "example.test") == (
        "domain example.test still has 1 account(s); remove them first or use --force"
    )
    assert Account.objects.filter(pk=bob.pk).exists()

    out, _ = run("domain", "remove", "example.test", "--force")

    assert out == "removed domain example.test\n"
    assert not Domain.objects.exists()
    assert not Account.objects.exists()
    assert not Folder.objects.exists()


def test_it_refuses_to_remove_an_unknown_domain():
    assert refused("domain", "remove", "nowhere.example") == "domain nowhere.example does not exist"


def test_it_adds_and_removes_an_alias_domain(example):
    out, _ = run("domain", "alias", "example.org", "example.test")

    assert out == "added alias domain example.org → example.test\n"
    assert DomainAlias.objects.get().target == example

    out, _ = run("domain", "unalias", "example.org")

    assert out == "removed alias domain example.org\n"
    assert not DomainAlias.objects.exists()


def test_it_refuses_an_alias_domain_of_an_unknown_domain():
    assert refused("domain", "alias", "example.org", "nowhere.example") == (
        "domain nowhere.example does not exist"
    )
    assert refused("domain", "unalias", "example.org") == "alias domain example.org does not exist"


def test_it_disables_and_enables_a_domain(example):
    out, _ = run("domain", "disable", "example.test")
    assert out == "disabled domain example.test\n"
    assert Domain.objects.get().active is False

    out, _ = run("domain", "enable", "example.test")
    assert out == "enabled domain example.test\n"
    assert Domain.objects.get().active is True


# account --------------------------------------------------------------------------


def test_it_adds_an_account_with_a_password_from_stdin(example):
    out, err = run(
        "account", "add", "Alice@Example.test", "--password-stdin", "--quota", "500M",
        "--name", "Alice Liddell", stdin=GOOD_PASSWORD + "\n",
    )

    assert out == "added account alice@example.test (quota 500M)\n"
    assert err == ""
    alice = account("alice@example.test")
    assert (alice.quota, alice.display_name, alice.active) == (500 * MiB, "Alice Liddell", True)
    assert alice.check_password(GOOD_PASSWORD)
    assert set(alice.folders.values_list("name", flat=True)) >= {"INBOX"}


def test_it_keeps_everything_but_the_line_ending_of_a_password_on_stdin(example):
    run("account", "add", "alice@example.test", "--password-stdin", stdin=f" {GOOD_PASSWORD} \r\nrest\n")

    assert account("alice@example.test").check_password(f" {GOOD_PASSWORD} ")


def test_it_hashes_passwords_with_argon2(example, settings):
    # tests/conftest.py swaps in a fast hasher for every test; this one uses the real ones.
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    run("account", "add", "alice@example.test", "--password-stdin", stdin=GOOD_PASSWORD)

    alice = account("alice@example.test")
    assert alice.password.startswith("argon2$argon2id$")
    assert alice.check_password(GOOD_PASSWORD)


def test_it_creates_an_account_without_password_when_nobody_can_type_one(example):
    out, err = run("account", "add", "alice@example.test")

    assert out == "added account alice@example.test (quota 1G)\n"
    assert err == (
        "warning: alice@example.test has no password and cannot log in; "
        "set one with: manage.py account passwd alice@example.test\n"
    )
    alice = account("alice@example.test")
    assert alice.password == ""
    assert not alice.check_password("")


def test_it_gives_new_accounts_the_domain_quota():
    actions.create_domain("example.test", default_quota=2 * GiB)

    run("account", "add", "alice@example.test")

    assert account("alice@example.test").quota == 2 * GiB


def test_it_asks_for_the_password_twice_at_a_terminal(example, monkeypatch):
    typed = iter([GOOD_PASSWORD, GOOD_PASSWORD])
    monkeypatch.setattr(cli, "getpass", lambda prompt: next(typed))

    out, err = run("account", "add", "alice@example.test", stdin=Terminal())

    assert (out, err) == ("added account alice@example.test (quota 1G)\n", "")
    assert account("alice@example.test").check_password(GOOD_PASSWORD)


def test_it_refuses_passwords_that_do_not_match(example, monkeypatch):
    typed = iter([GOOD_PASSWORD, GOOD_PASSWORD + "x"])
    monkeypatch.setattr(cli, "getpass", lambda prompt: next(typed))

    assert refused("account", "add", "alice@example.test", stdin=Terminal()) == "passwords do not match"
    assert not Account.objects.exists()


@pytest.mark.parametrize(
    "address, reason",
    [
        ("alice", "'alice' is not an address of the form local@domain"),
        ("@example.test", "'@example.test' is not an address of the form local@domain"),
        ("al ice@example.test", "'al ice' is not a valid local part"),
        ("alice@", "empty domain"),
        ("alice@nowhere.example", "domain nowhere.example does not exist"),
    ],
)
def test_it_refuses_an_address_it_cannot_serve(example, address, reason):
    assert reason in refused("account", "add", address)
    assert not Account.objects.exists()


def test_it_refuses_an_address_in_an_alias_domain(example):
    actions.create_domain_alias("example.org", "example.test")

    assert refused("account", "add", "alice@example.org") == (
        "example.org is an alias domain; use an address in its target domain"
    )


def test_it_refuses_a_duplicate_account(bob):
    assert refused("account", "add", "BOB@example.test") == "bob@example.test already exists as an account"


def test_it_refuses_an_address_already_used_by_an_alias_or_redirect(bob):
    actions.create_alias("postmaster@example.test", ["bob@example.test"])
    actions.create_redirect("mallory@example.test", "mallory@elsewhere.example")

    assert refused("account", "add", "postmaster@example.test") == (
        "postmaster@example.test already exists as an alias"
    )
    assert refused("account", "add", "mallory@example.test") == (
        "mallory@example.test already exists as a redirect"
    )


def test_it_refuses_an_account_quota_that_is_not_a_size(example):
    assert refused("account", "add", "alice@example.test", "--quota", "12XB") == (
        "invalid quota: '12XB' is not a size (examples: 500M, 2G, 1048576)"
    )
    assert not Account.objects.exists()


@pytest.mark.parametrize(
    "password, reason",
    [
        ("short", "This password is too short. It must contain at least 8 characters."),
        ("password123", "This password is too common."),
        ("", "This password is too short. It must contain at least 8 characters."),
    ],
)
def test_it_refuses_a_weak_password(example, password, reason):
    add = ("account", "add", "alice@example.test", "--password-stdin")
    assert refused(*add, stdin=password + "\n") == reason
    assert not Account.objects.exists()


def test_it_refuses_password_stdin_with_nothing_on_stdin(example):
    assert refused("account", "add", "alice@example.test", "--password-stdin") == (
        "--password-stdin: no password on standard input"
    )


def test_it_lists_accounts_with_quota_and_usage_in_one_query(bob, django_assert_num_queries):
    actions.create_account("alice@example.test", quota=GiB, display_name="Alice Liddell")
    actions.set_account_active("bob@example.test", False)
    actions.set_quota("bob@example.test", 0)
    actions.create_domain("bücher.example")
    actions.create_account("carol@bücher.example", quota=500 * MiB)
    # Usage as deliveries would have left it.
    Account.objects.filter(localpart="alice").update(quota_used=int(12.3 * MiB))

    with django_assert_num_queries(1):
        out, _ = run("account", "list")

    assert out.splitlines() == [
        "alice@example.test    1G         12.3M used  active    Alice Liddell",
        "bob@example.test      unlimited  0B used     disabled  Bob",
        "carol@bücher.example  500M       0B used     active",
    ]


def test_it_lists_the_accounts_of_one_domain(bob):
    actions.create_domain("other.example")
    actions.create_account("dave@other.example", quota=GiB)

    out, _ = run("account", "list", "other.example")

    assert out == "dave@other.example  1G  0B used  active\n"
    assert refused("account", "list", "nowhere.example") == "domain nowhere.example does not exist"


def test_it_removes_an_account_and_its_mail(bob):
    out, _ = run("account", "remove", "bob@example.test")

    assert out == "removed account bob@example.test and its mail\n"
    assert not Account.objects.exists()
    assert not Folder.objects.exists()
    assert refused("account", "remove", "bob@example.test") == "account bob@example.test does not exist"


def test_it_changes_a_password(bob):
    out, _ = run("account", "passwd", "bob@example.test", "--password-stdin", stdin=GOOD_PASSWORD + "\n")

    assert out == "password changed for bob@example.test\n"
    assert account("bob@example.test").check_password(GOOD_PASSWORD)


def test_it_prompts_for_a_new_password_at_a_terminal(bob, monkeypatch):
    prompts = []
    monkeypatch.setattr(cli, "getpass", lambda prompt: prompts.append(prompt) or GOOD_PASSWORD)

    run("account", "passwd", "bob@example.test", stdin=Terminal())

    assert prompts == ["Password: ", "Password (again): "]
    assert account("bob@example.test").check_password(GOOD_PASSWORD)


def test_it_will_not_change_a_password_without_a_terminal_or_stdin(bob):
    assert refused("account", "passwd", "bob@example.test") == (
        "standard input is not a terminal; pass the password with --password-stdin"
    )


def test_it_refuses_a_weak_new_password(bob):
    assert refused("account", "passwd", "bob@example.test", "--password-stdin", stdin="zq8\n") == (
        "This password is too short. It must contain at least 8 characters."
    )
    assert account("bob@example.test").password == ""


def test_it_checks_the_account_before_asking_for_a_password(example, monkeypatch):
    monkeypatch.setattr(cli, "getpass", lambda prompt: pytest.fail("asked for a password"))

    assert refused("account", "passwd", "nobody@example.test", stdin=Terminal()) == (
        "account nobody@example.test does not exist"
    )


def test_it_sets_a_quota(bob):
    out, _ = run("account", "quota", "bob@example.test", "1.5G")

    assert out == "quota of bob@example.test is now 1.5G (0B used)\n"
    assert account("bob@example.test").quota == 3 * GiB // 2

    out, _ = run("account", "quota", "bob@example.test", "0")

    assert out == "quota of bob@example.test is now unlimited (0B used)\n"
    assert account("bob@example.test").quota == 0


def test_it_refuses_a_quota_that_is_not_a_size(bob):
    assert refused("account", "quota", "bob@example.test", "12XB").startswith("invalid quota: '12XB'")
    assert account("bob@example.test").quota == GiB


def test_it_disables_and_enables_an_account(bob):
    out, _ = run("account", "disable", "bob@example.test")
    assert out == "disabled account bob@example.test\n"
    assert account("bob@example.test").active is False

    out, _ = run("account", "enable", "bob@example.test")
    assert out == "enabled account bob@example.test\n"
    assert account("bob@example.test").active is True


# alias ----------------------------------------------------------------------------


def targets(address):
    localpart, domain = address.split("@")
    alias = Alias.objects.get(localpart=localpart, domain__name=domain)
    return [target.address for target in alias.targets.all()]


def test_it_adds_an_alias_with_several_targets(bob):
    actions.create_account("alice@example.test")

    out, _ = run(
        "alias", "add", "Info@example.test", "alice@example.test,BOB@example.test", "mallory@elsewhere.example"
    )

    assert out == (
        "added alias info@example.test → alice@example.test,bob@example.test,mallory@elsewhere.example\n"
    )
    assert targets("info@example.test") == [
        "alice@example.test", "bob@example.test", "mallory@elsewhere.example",
    ]


def test_it_adds_a_catchall_alias(bob):
    out, _ = run("alias", "add", "@example.test", "bob@example.test")

    assert out == "added alias @example.test → bob@example.test\n"
    assert Alias.objects.get().localpart == ""
    assert targets("@example.test") == ["bob@example.test"]


def test_it_lists_aliases_with_their_targets(bob, django_assert_num_queries):
    actions.create_alias("@example.test", ["bob@example.test"])
    actions.create_alias("postmaster@example.test", ["bob@example.test", "mallory@bücher.example"])
    actions.create_domain("other.example")
    actions.create_alias("info@other.example", ["bob@example.test"])

    with django_assert_num_queries(2):
        out, _ = run("alias", "list")

    assert out.splitlines() == [
        "@example.test            active  bob@example.test",
        "postmaster@example.test  active  bob@example.test,mallory@bücher.example",
        "info@other.example       active  bob@example.test",
    ]
    out, _ = run("alias", "list", "other.example")
    assert out == "info@other.example  active  bob@example.test\n"


def test_it_replaces_the_targets_of_an_alias(bob):
    actions.create_alias("info@example.test", ["bob@example.test"])

    out, _ = run("alias", "set", "info@example.test", "mallory@elsewhere.example")

    assert out == "alias info@example.test → mallory@elsewhere.example\n"
    assert targets("info@example.test") == ["mallory@elsewhere.example"]


def test_it_removes_an_alias(bob):
    actions.create_alias("@example.test", ["bob@example.test"])

    out, _ = run("alias", "remove", "@example.test")

    assert out == "removed alias @example.test\n"
    assert not Alias.objects.exists()
    assert refused("alias", "remove", "@example.test") == "alias *@example.test does not exist"


def test_it_refuses_an_alias_loop(bob):
    actions.create_alias("a@example.test", ["bob@example.test"])
    actions.create_alias("b@example.test", ["a@example.test"])

    assert refused("alias", "set", "a@example.test", "b@example.test") == (
        "alias loop: a@example.test → b@example.test → a@example.test"
    )
    assert targets("a@example.test") == ["bob@example.test"]


def test_it_refuses_an_alias_to_a_local_address_that_does_not_exist(bob):
    assert refused("alias", "add", "info@example.test", "bob@example.test,nobody@example.test") == (
        "target nobody@example.test does not exist in a local domain"
    )
    assert not Alias.objects.exists()


def test_it_refuses_a_duplicate_alias_or_one_over_an_account(bob):
    actions.create_alias("info@example.test", ["bob@example.test"])

    assert refused("alias", "add", "info@example.test", "bob@example.test") == (
        "info@example.test already exists as an alias"
    )
    assert refused("alias", "add", "bob@example.test", "mallory@elsewhere.example") == (
        "bob@example.test already exists as an account"
    )


def test_it_refuses_a_malformed_alias_target(bob):
    assert refused("alias", "add", "info@example.test", "not-an-address") == (
        "target 'not-an-address' is not an address of the form local@domain"
    )
    assert refused("alias", "add", "info@example.test", ",") == "an alias needs at least one target"


# redirect -------------------------------------------------------------------------


def test_it_adds_lists_and_removes_a_redirect(example):
    out, _ = run("redirect", "add", "Mallory@example.test", "mallory@Elsewhere.example")

    assert out == "added redirect mallory@example.test → mallory@elsewhere.example\n"
    redirect = Redirect.objects.get()
    assert (redirect.localpart, redirect.target) == ("mallory", "mallory@elsewhere.example")

    run("redirect", "add", "eve@example.test", "eve@bücher.example")
    out, _ = run("redirect", "list", "example.test")
    assert out.splitlines() == [
        "eve@example.test      active  eve@bücher.example",
        "mallory@example.test  active  mallory@elsewhere.example",
    ]

    out, _ = run("redirect", "remove", "mallory@example.test")
    assert out == "removed redirect mallory@example.test\n"
    assert list(Redirect.objects.values_list("localpart", flat=True)) == ["eve"]
    assert refused("redirect", "remove", "mallory@example.test") == (
        "redirect mallory@example.test does not exist"
    )


def test_it_refuses_a_redirect_to_a_local_domain(bob):
    actions.create_domain_alias("example.org", "example.test")

    assert refused("redirect", "add", "old@example.test", "bob@example.test") == (
        "bob@example.test is in a local domain; use an alias for local targets"
    )
    assert refused("redirect", "add", "old@example.test", "bob@example.org") == (
        "bob@example.org is in a local domain; use an alias for local targets"
    )
    assert not Redirect.objects.exists()


def test_it_refuses_a_redirect_over_an_existing_address(bob):
    actions.create_redirect("old@example.test", "mallory@elsewhere.example")

    assert refused("redirect", "add", "old@example.test", "eve@elsewhere.example") == (
        "old@example.test already exists as a redirect"
    )
    assert refused("redirect", "add", "bob@example.test", "eve@elsewhere.example") == (
        "bob@example.test already exists as an account"
    )
    assert refused("redirect", "add", "x@nowhere.example", "eve@elsewhere.example") == (
        "domain nowhere.example does not exist (add it with: manage.py domain add nowhere.example)"
    )


# the real process: exit status and one line on stderr -----------------------------


@pytest.mark.sqlite_only  # manage.py runs on a data dir and SQLite file of its own in either pass
def test_it_exits_zero_on_success_and_non_zero_with_one_line_on_failure(manage):
    added = manage("domain", "add", "example.test")
    assert (added.returncode, added.stdout, added.stderr) == (0, "added domain example.test\n", "")

    again = manage("domain", "add", "example.test")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == "CommandError: domain example.test already exists\n"

    bad_quota = manage("account", "add", "bob@example.test", "--quota", "12XB")
    assert bad_quota.returncode == 1
    assert bad_quota.stderr == (
        "CommandError: invalid quota: '12XB' is not a size (examples: 500M, 2G, 1048576)\n"
    )

    unknown = manage("account", "add", "bob@nowhere.example", "--password-stdin", stdin=GOOD_PASSWORD + "\n")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "CommandError: domain nowhere.example does not exist "
        "(add it with: manage.py domain add nowhere.example)\n"
    )


@pytest.mark.sqlite_only  # manage.py runs on a data dir and SQLite file of its own in either pass
def test_it_warns_on_stderr_when_a_piped_account_gets_no_password(manage):
    manage("domain", "add", "piped.example")

    created = manage("account", "add", "bob@piped.example", "--quota", "10M")

    assert created.returncode == 0
    assert created.stdout == "added account bob@piped.example (quota 10M)\n"
    assert created.stderr.count("\n") == 1 and "cannot log in" in created.stderr
    listed = manage("account", "list", "piped.example")
    assert (listed.returncode, listed.stdout) == (0, "bob@piped.example  10M  0B used  active\n")


@pytest.mark.django_db
def test_the_data_commands_skip_djangos_system_checks(monkeypatch, capsys):
    """They import every URLconf and view (more than a second per invocation); `manage.py
    check`, migrate and the servers run them. A failing check does not stop `domain list`."""
    from django.core import checks
    from django.core.management import execute_from_command_line

    monkeypatch.setattr(checks, "run_checks", lambda *args, **kwargs: [checks.Error("a check that fails", id="test.E001")])
    execute_from_command_line(["manage.py", "domain", "list"])
    with pytest.raises(SystemExit):
        execute_from_command_line(["manage.py", "check"])
    assert "a check that fails" in capsys.readouterr().err

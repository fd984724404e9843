"""Delegated administration: scoping, per-domain limits and the audit log, the same in
the actions, the Django admin and the CLI.

Personas (tests/accounts/tenants.py): root is a superadmin; alice administers
example.test, where bob has a mailbox; mallory administers mallory.example, where carol
has one.
"""
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from accounts import actions
from accounts.errors import Forbidden, LimitExceeded, NotFound
from accounts.models import Account, Alias, AuditEntry, Domain, DomainAlias, LoginEvent, Redirect
from tests.accounts.tenants import MiB, alice, bob, carol, example, mallory, mallory_domain, root, tenants  # noqa: F401
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def addresses(queryset):
    return sorted(str(row.address) for row in queryset)


# Scoping: one rule, visible_to() ----------------------------------------------------------


def test_it_shows_a_superadmin_everything_and_a_domain_admin_only_their_domains(tenants, root, alice, mallory):
    actions.create_domain_alias("example.net", "example.test")
    assert [d.name for d in Domain.objects.visible_to(root)] == ["example.test", "mallory.example"]
    assert [d.name for d in Domain.objects.visible_to(alice)] == ["example.test"]
    assert [d.name for d in Domain.objects.visible_to(mallory)] == ["mallory.example"]
    assert addresses(Account.objects.visible_to(alice)) == ["bob@example.test"]
    assert addresses(Account.objects.visible_to(mallory)) == ["carol@mallory.example"]
    assert addresses(Alias.objects.visible_to(mallory)) == ["sales@mallory.example"]
    assert addresses(Redirect.objects.visible_to(alice)) == ["gone@example.test"]
    assert [a.name for a in DomainAlias.objects.visible_to(alice)] == ["example.net"]
    assert not DomainAlias.objects.visible_to(mallory).exists()


def test_it_shows_a_staff_user_who_administers_nothing_nothing(tenants):
    from tests.accounts.tenants import make_user

    nobody = make_user("nobody")
    nobody.is_staff = True
    nobody.save()
    assert not Domain.objects.visible_to(nobody).exists()
    assert not Account.objects.visible_to(nobody).exists()
    assert not AuditEntry.objects.visible_to(nobody).exists()


def test_it_shows_login_events_of_the_admins_accounts_only(tenants, alice, root, bob, carol):
    from django.utils import timezone

    for account, address in ((bob, bob.address), (carol, carol.address), (None, "ghost@nowhere.invalid")):
        LoginEvent.objects.create(
            account=account, address=address, service="imap", success=False, reason="password", time=timezone.now()
        )
    assert [e.address for e in LoginEvent.objects.visible_to(alice)] == ["bob@example.test"]
    assert LoginEvent.objects.visible_to(root).count() == 3


# The actions refuse another tenant's objects as if they did not exist ------------------------


def test_it_answers_another_tenants_objects_as_not_existing(tenants, alice):
    with pytest.raises(NotFound) as theirs:
        actions.get_account("carol@mallory.example", acting_user=alice)
    with pytest.raises(NotFound) as nobodys:
        actions.get_account("carol@unknown.example", acting_user=alice)
    assert str(theirs.value) == str(nobodys.value).replace("unknown.example", "mallory.example")
    for attempt in (
        lambda: actions.create_account("eve@mallory.example", password=PASSWORD, acting_user=alice),
        lambda: actions.set_quota("carol@mallory.example", MiB, acting_user=alice),
        lambda: actions.set_password("carol@mallory.example", "another good password 1", acting_user=alice),
        lambda: actions.remove_account("carol@mallory.example", acting_user=alice),
        lambda: actions.create_alias("x@mallory.example", ["carol@mallory.example"], acting_user=alice),
        lambda: actions.set_alias_targets("sales@mallory.example", ["bob@example.test"], acting_user=alice),
        lambda: actions.remove_alias("sales@mallory.example", acting_user=alice),
        lambda: actions.remove_redirect("old@mallory.example", acting_user=alice),
        lambda: actions.remove_domain("mallory.example", acting_user=alice),
        lambda: actions.set_domain_default_quota("mallory.example", MiB, acting_user=alice),
    ):
        with pytest.raises(NotFound):
            attempt()
    assert Account.objects.filter(localpart="carol").get().quota == 100 * MiB
    assert Alias.objects.filter(localpart="sales").exists()


def test_it_lets_a_domain_admin_manage_their_own_domain(tenants, alice):
    account = actions.create_account("dave@example.test", password=PASSWORD, quota=10 * MiB, acting_user=alice)
    actions.set_quota("dave@example.test", 20 * MiB, acting_user=alice)
    actions.create_alias("team@example.test", ["dave@example.test", "bob@example.test"], acting_user=alice)
    actions.set_domain_default_quota("example.test", 5 * MiB, acting_user=alice)
    account.refresh_from_db()
    assert account.quota == 20 * MiB
    assert Domain.objects.get(name="example.test").default_quota == 5 * MiB


@pytest.mark.parametrize(
    "attempt",
    [
        lambda user: actions.create_domain("new.example", acting_user=user),
        lambda user: actions.remove_domain("example.test", force=True, acting_user=user),
        lambda user: actions.set_domain_active("example.test", False, acting_user=user),
        lambda user: actions.set_domain_limits("example.test", max_accounts=1000, acting_user=user),
        lambda user: actions.set_domain_send_limits("example.test", 0, 0, acting_user=user),
        lambda user: actions.create_domain_alias("example.org", "example.test", acting_user=user),
        lambda user: actions.grant_domain_admin("alice", "mallory.example", acting_user=user),
        lambda user: actions.unblock_login(address="bob@example.test", acting_user=user),
    ],
    ids=["add domain", "remove domain", "disable domain", "limits", "send limits", "alias domain", "appoint",
         "unblock"],
)
def test_it_keeps_server_wide_changes_for_superadmins(tenants, alice, root, attempt):
    with pytest.raises(Forbidden, match="only a superadmin"):
        attempt(alice)
    assert Domain.objects.get(name="example.test").active


def test_it_lets_a_domain_admin_grant_send_as_only_in_their_domains(tenants, alice, root):
    actions.grant_send_as("bob@example.test", "sales@example.test", acting_user=alice)
    with pytest.raises(Forbidden, match="mallory.example is not your domain"):
        actions.grant_send_as("bob@example.test", "sales@mallory.example", acting_user=alice)
    with pytest.raises(Forbidden):
        actions.set_send_as("bob@example.test", ["ceo@bank.example"], acting_user=alice)
    actions.grant_send_as("bob@example.test", "bob@private.example", acting_user=root)
    # What a superadmin granted stays when alice edits the list around it.
    assert actions.set_send_as(
        "bob@example.test", ["bob@private.example", "info@example.test"], acting_user=alice
    ) == ["bob@private.example", "info@example.test"]


def test_it_lets_a_domain_admin_lower_an_accounts_sending_limit_but_not_lift_it(tenants, alice, settings):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 500
    settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY = 2000
    actions.set_send_limits("bob@example.test", 100, None, acting_user=alice)
    with pytest.raises(LimitExceeded, match="at most the domain's limit \\(500\\)"):
        actions.set_send_limits("bob@example.test", 501, None, acting_user=alice)
    with pytest.raises(LimitExceeded):
        actions.set_send_limits("bob@example.test", 0, None, acting_user=alice)  # 0 is no limit


# Limits -------------------------------------------------------------------------------------


def test_it_refuses_accounts_past_the_domains_account_limit(tenants, alice, root):
    actions.set_domain_limits("example.test", max_accounts=2, acting_user=root)
    actions.create_account("dave@example.test", quota=MiB, acting_user=alice)
    with pytest.raises(LimitExceeded, match="example.test may have at most 2 account"):
        actions.create_account("erin@example.test", quota=MiB, acting_user=alice)
    with pytest.raises(LimitExceeded):  # the superadmin too: they raise the limit instead
        actions.create_account("erin@example.test", quota=MiB, acting_user=root)
    assert not Account.objects.filter(localpart="erin").exists()
    actions.set_domain_limits("example.test", max_accounts=3, acting_user=root)
    actions.create_account("erin@example.test", quota=MiB, acting_user=alice)


def test_it_counts_aliases_and_redirects_together_against_the_alias_limit(tenants, alice, root):
    actions.set_domain_limits("example.test", max_aliases=3, acting_user=root)  # info@ and gone@ exist
    actions.create_alias("team@example.test", ["bob@example.test"], acting_user=alice)
    with pytest.raises(LimitExceeded, match="at most 3 alias"):
        actions.create_redirect("away@example.test", "bob@elsewhere.invalid", acting_user=alice)
    with pytest.raises(LimitExceeded):
        actions.create_alias("@example.test", ["bob@example.test"], acting_user=alice)
    # Removing makes room; mallory's domain has no limit.
    actions.remove_alias("team@example.test", acting_user=alice)
    actions.create_redirect("away@example.test", "bob@elsewhere.invalid", acting_user=alice)
    actions.create_alias("more@mallory.example", ["carol@mallory.example"])


def test_it_refuses_quota_past_the_domains_total(tenants, alice, root):
    actions.set_domain_limits("example.test", max_quota_total=250 * MiB, acting_user=root)  # bob has 100M
    actions.create_account("dave@example.test", quota=100 * MiB, acting_user=alice)
    with pytest.raises(LimitExceeded, match="at most 250M of quota in all; 50M is left"):
        actions.create_account("erin@example.test", quota=60 * MiB, acting_user=alice)
    with pytest.raises(LimitExceeded, match="50M is left"):
        actions.set_quota("dave@example.test", 151 * MiB, acting_user=alice)
    actions.set_quota("dave@example.test", 150 * MiB, acting_user=alice)  # exactly the total
    with pytest.raises(LimitExceeded, match="need a quota"):
        actions.set_quota("bob@example.test", 0, acting_user=alice)  # unlimited would escape the total
    actions.set_quota("bob@example.test", 50 * MiB, acting_user=alice)
    assert sum(Account.objects.filter(domain__name="example.test").values_list("quota", flat=True)) == 200 * MiB


def test_it_uses_the_default_quota_under_a_total_limit(tenants, alice, root, settings):
    settings.MAILSUITE_DEFAULT_QUOTA = 0  # unlimited by default: refused under a total
    actions.set_domain_limits("example.test", max_quota_total=GiB_, acting_user=root)
    with pytest.raises(LimitExceeded, match="need a quota"):
        actions.create_account("dave@example.test", acting_user=alice)
    actions.set_domain_default_quota("example.test", 10 * MiB, acting_user=alice)
    assert actions.create_account("dave@example.test", acting_user=alice).quota == 10 * MiB


GiB_ = 1024 * MiB


# The audit log ------------------------------------------------------------------------------


def test_it_audits_each_change_with_who_what_and_before_after(tenants, alice):
    AuditEntry.objects.all().delete()
    actions.create_account("dave@example.test", password=PASSWORD, quota=10 * MiB, acting_user=alice)
    actions.set_quota("dave@example.test", 20 * MiB, acting_user=alice)
    actions.set_password("dave@example.test", "a new good password 2", acting_user=alice)
    actions.remove_account("dave@example.test", acting_user=alice)
    entries = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in entries] == [
        "account.create", "account.set_quota", "account.set_password", "account.remove",
    ]
    create, quota, password, remove = entries
    assert {e.actor_id for e in entries} == {alice.pk} and {e.actor_name for e in entries} == {"alice"}
    assert {e.domain_name for e in entries} == {"example.test"}
    assert create.object_type == "account" and create.object_repr == "dave@example.test"
    assert create.before is None and create.after["quota"] == 10 * MiB and create.after["has_password"]
    assert (quota.before["quota"], quota.after["quota"]) == (10 * MiB, 20 * MiB)
    assert remove.before["address"] == "dave@example.test" and remove.after is None
    stored = repr([(e.before, e.after) for e in entries])
    assert "md5$" not in stored and "password" not in stored.replace("has_password", "")


def test_it_writes_no_entry_for_a_refused_change(tenants, alice, root):
    actions.set_domain_limits("example.test", max_accounts=1, acting_user=root)
    before = AuditEntry.objects.count()
    with pytest.raises(LimitExceeded):
        actions.create_account("dave@example.test", acting_user=alice)
    with pytest.raises(NotFound):
        actions.remove_account("carol@mallory.example", acting_user=alice)
    assert AuditEntry.objects.count() == before


def test_it_shows_a_domain_admin_the_audit_of_their_domains_only(tenants, alice, mallory, root):
    actions.set_quota("bob@example.test", MiB, acting_user=alice)
    actions.set_quota("carol@mallory.example", MiB, acting_user=mallory)
    mine = AuditEntry.objects.visible_to(alice)
    assert mine.exists() and set(mine.values_list("domain_name", flat=True)) == {"example.test"}
    assert set(AuditEntry.objects.visible_to(root).values_list("domain_name", flat=True)) >= {
        "example.test", "mallory.example"
    }
    system = AuditEntry.objects.filter(action="domain.create").first()
    assert system.actor is None and system.actor_name == "system"


# The same scoping in the CLI ----------------------------------------------------------------


def run(*args):
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr, stdin=io.StringIO(""))
    return stdout.getvalue()


def test_it_scopes_the_cli_with_as(tenants):
    assert "carol@mallory.example" in run("account", "list")
    listed = run("account", "--as", "alice", "list")
    assert "bob@example.test" in listed and "mallory" not in listed
    assert run("account", "list", "--as", "mallory").split()[0] == "carol@mallory.example"
    assert "example.test" not in run("domain", "list", "--as", "mallory")
    assert "carol" not in run("alias", "list", "--as", "alice")
    assert "old@" not in run("redirect", "list", "--as", "alice")
    with pytest.raises(CommandError, match="domain mallory.example does not exist"):
        run("account", "--as", "alice", "remove", "carol@mallory.example")
    with pytest.raises(CommandError, match="domain mallory.example does not exist"):
        run("account", "list", "mallory.example", "--as", "alice")
    with pytest.raises(CommandError, match="only a superadmin may add domains"):
        run("domain", "add", "new.example", "--as", "alice")
    with pytest.raises(CommandError, match="--as: there is no active user nobody"):
        run("account", "list", "--as", "nobody")
    assert Account.objects.filter(localpart="carol").exists()


def test_it_audits_cli_changes_as_the_acting_user(tenants):
    run("account", "quota", "bob@example.test", "50M", "--as", "alice")
    entry = AuditEntry.objects.latest("id")
    assert (entry.action, entry.actor_name, entry.via) == ("account.set_quota", "alice", "cli")
    run("account", "quota", "bob@example.test", "60M")
    entry = AuditEntry.objects.latest("id")
    assert (entry.actor_name, entry.via) == ("system", "cli")


def test_it_sets_and_shows_limits_and_domain_admins_from_the_cli(tenants):
    shown = run("domain", "limits", "example.test", "--max-accounts", "5", "--max-quota", "1G")
    assert shown.splitlines() == [
        "accounts  at most 5   1 in use",
        "aliases   no limit    2 in use",
        "quota     at most 1G  100M handed out",
    ]
    assert Domain.objects.get(name="example.test").max_accounts == 5
    run("domain", "limits", "example.test", "--max-accounts", "none")
    assert Domain.objects.get(name="example.test").max_accounts is None
    with pytest.raises(CommandError, match="only a superadmin"):
        run("domain", "limits", "example.test", "--max-accounts", "99", "--as", "alice")
    run("domain", "admin-add", "mallory.example", "alice")
    assert "carol@mallory.example" in run("account", "list", "--as", "alice")
    run("domain", "admin-remove", "mallory.example", "alice")
    assert "carol@mallory.example" not in run("account", "list", "--as", "alice")


# The same scoping in the Django admin -------------------------------------------------------


def changelist(client, model):
    response = client.get(reverse(f"admin:accounts_{model}_changelist"))
    assert response.status_code == 200
    return response.content.decode()


def test_it_scopes_the_admin_changelists(client, tenants, alice):
    actions.set_quota("carol@mallory.example", MiB, acting_user=tenants["mallory"])
    client.force_login(alice)
    accounts = changelist(client, "account")
    assert "bob@example.test" in accounts and "carol@mallory.example" not in accounts
    assert "mallory.example" not in changelist(client, "domain")
    assert "sales@mallory" not in changelist(client, "alias") and "info@example.test" in changelist(client, "alias")
    assert "old@mallory" not in changelist(client, "redirect")
    audit = changelist(client, "auditentry")
    assert "bob@example.test" in audit and "carol@mallory.example" not in audit
    # Another tenant's object is missing, not forbidden.
    carol = Account.objects.get(localpart="carol")
    response = client.get(reverse("admin:accounts_account_change", args=[carol.pk]))
    assert response.status_code == 302 and response.url == reverse("admin:index")
    # Server-wide pages stay the superadmin's.
    assert client.get(reverse("admin:accounts_domainadmin_changelist")).status_code == 403
    assert client.get(reverse("admin:accounts_loginthrottle_changelist")).status_code == 403
    assert client.get(reverse("admin:mta_queuedmessage_changelist")).status_code == 403
    assert client.get(reverse("admin:accounts_domain_add")).status_code == 403


def test_it_lets_a_domain_admin_add_accounts_in_the_admin_only_in_their_domains(client, tenants, alice, example,
                                                                              mallory_domain):
    client.force_login(alice)
    form = {"localpart": "dave", "display_name": "Dave", "password1": "a good long password 3",
            "password2": "a good long password 3", "quota": "10M", "active": "on"}
    response = client.post(reverse("admin:accounts_account_add"), {**form, "domain": mallory_domain.pk})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Account.objects.filter(localpart="dave").exists()
    response = client.post(reverse("admin:accounts_account_add"), {**form, "domain": example.pk})
    assert response.status_code == 302
    entry = AuditEntry.objects.latest("id")
    assert (entry.action, entry.actor_name, entry.via, entry.object_repr) == (
        "account.create", "alice", "admin", "dave@example.test"
    )


def test_it_shows_a_limit_refusal_in_the_admin_form(client, tenants, alice, example, root):
    actions.set_domain_limits("example.test", max_accounts=1, acting_user=root)
    client.force_login(alice)
    response = client.post(reverse("admin:accounts_account_add"), {
        "localpart": "dave", "domain": example.pk, "password1": "a good long password 3",
        "password2": "a good long password 3", "quota": "10M", "active": "on",
    })
    assert response.status_code == 200
    assert "example.test may have at most 1 account(s)" in response.content.decode()


def test_it_lets_only_a_superadmin_change_a_domains_limits_in_the_admin(client, tenants, alice, root, example):
    client.force_login(alice)
    page = client.get(reverse("admin:accounts_domain_change", args=[example.pk])).content.decode()
    assert 'name="default_quota"' in page and 'name="max_accounts"' not in page
    client.force_login(root)
    page = client.get(reverse("admin:accounts_domain_change", args=[example.pk])).content.decode()
    assert 'name="max_accounts"' in page and "alice" in page
    response = client.post(reverse("admin:accounts_domain_change", args=[example.pk]), {
        "default_quota": "0", "active": "on", "messages_per_hour": "", "recipients_per_day": "",
        "max_accounts": "10", "max_aliases": "", "max_quota_total": "5G",
    })
    assert response.status_code == 302, response.content.decode()[:3000]
    example.refresh_from_db()
    assert (example.max_accounts, example.max_aliases, example.max_quota_total) == (10, None, 5 * 1024 * MiB)
    assert AuditEntry.objects.latest("id").action == "domain.set_limits"


def test_it_filters_the_audit_log_by_the_webmail_channel(client, tenants, root, alice, bob):
    """bob's own change to an external account in the webmail is recorded via webmail."""
    actions.set_quota("bob@example.test", 50 * MiB, acting_user=alice)
    assert client.post("/login/", {"address": "bob@example.test", "password": PASSWORD}).status_code == 302
    assert client.post("/settings/transfer/external/", {
        "protocol": "imap", "host": "imap.old.example", "tls": "implicit", "username": "bob.old",
        "password": "old secret", "local_folder": "INBOX", "keep": "on",
    }).status_code == 302
    client.force_login(root)
    url = reverse("admin:accounts_auditentry_changelist")
    filters = client.get(url).content.decode()
    assert '<a href="?via=webmail">webmail</a>' in filters
    page = client.get(url, {"via": "webmail"}).content.decode()
    assert "external.add" in page and "bob.old@imap.old.example for bob@example.test" in page
    assert "account.set_quota" not in page and "domain.create" not in page
    assert "external.add" not in client.get(url, {"via": "-"}).content.decode()


def test_it_browses_and_filters_the_audit_log_read_only(client, tenants, root, alice):
    actions.set_quota("bob@example.test", 50 * MiB, acting_user=alice)
    client.force_login(root)
    url = reverse("admin:accounts_auditentry_changelist")
    page = client.get(url, {"object_type": "account", "via": "-"}).content.decode()
    assert "account.set_quota" in page and "domain.create" not in page
    assert "bob@example.test" in client.get(url, {"q": "alice"}).content.decode()
    entry = AuditEntry.objects.get(action="account.set_quota")
    detail = client.get(reverse("admin:accounts_auditentry_change", args=[entry.pk])).content.decode()
    assert "&quot;quota&quot;: 104857600" in detail and "&quot;quota&quot;: 52428800" in detail
    assert 'name="_save"' not in detail
    assert client.post(reverse("admin:accounts_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403


def test_the_audit_log_filter_offers_every_kind_of_object_the_code_records():
    """Every "kind.action" literal given to audit()/record_audit() (or mta's
    @_operator_change) in the project's code has its kind among the object filter's choices."""
    import re
    from pathlib import Path

    from accounts.admin import AuditObjectFilter

    root = Path(__file__).resolve().parents[2]
    call = re.compile(r'\b(?:audit|record_audit|_operator_change)\([^"\n]*"([a-z_]+)\.[a-z_]+"')
    recorded = {
        kind
        for path in root.glob("*/**/*.py") if path.relative_to(root).parts[0] not in {".venv", "tests", "bench"}
        for kind in call.findall(path.read_text())
    }
    assert {"account", "external", "spam", "queue"} <= recorded  # the search finds them
    assert recorded <= set(AuditObjectFilter.KINDS)


@pytest.mark.parametrize("command", [["sieve", "check", "-"], ["spam", "learn"], ["mail", "jobs"]])
def test_commands_that_act_as_the_system_refuse_as_rather_than_ignore_it(command, root):
    for argv in ([*command, "--as", "root"], [command[0], "--as", "root", *command[1:]]):
        with pytest.raises(CommandError, match="this command acts as the system and takes no --as"):
            call_command(*argv)


@pytest.mark.parametrize("command", [["queue", "list"], ["relay", "list"]])
def test_queue_and_relay_act_only_as_a_superadmin(command, tenants, alice, root):
    with pytest.raises(CommandError, match="only a superadmin may see or change"):
        call_command(*command, "--as", "alice")
    call_command(*command, "--as", "root", stdout=io.StringIO())


def test_a_route_change_made_as_a_superadmin_is_audited_under_them(tenants, root):
    call_command("relay", "--as", "root", "transport", "add", "elsewhere.test", "mx.elsewhere.test:2525",
                 stdout=io.StringIO())
    call_command("relay", "remove", "elsewhere.test", stdout=io.StringIO())
    entries = AuditEntry.objects.filter(object_type="route").order_by("id")
    assert [(e.action, e.actor_name, e.via) for e in entries] == [
        ("route.set_transport", "root", "cli"), ("route.remove", "system", "cli"),
    ]

"""CSV import and export of accounts and aliases: dry run first with a report per row,
then all rows or none; the same through the API and `manage.py bulk`, scoped like
everything else."""
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts import actions
from accounts.models import Account, Alias, AuditEntry
from api import csvio

pytestmark = pytest.mark.django_db

MiB = 1024**2
ACCOUNTS = """address,display_name,quota,active,password
dave@example.test,Dave,10M,yes,a good long password 1
bob@example.test,Robert,,yes,
erin@example.test,,5M,no,
"""


def test_it_reports_each_row_of_a_dry_run_and_writes_nothing(tenants, alice, bob):
    audited = AuditEntry.objects.count()
    report = csvio.import_csv("accounts", ACCOUNTS, acting_user=alice)
    assert [(r.line, r.address, r.result, r.message) for r in report.rows] == [
        (2, "dave@example.test", "created", ""),
        (3, "bob@example.test", "updated", "display name"),
        (4, "erin@example.test", "created", ""),
    ]
    assert not report.applied
    assert not Account.objects.filter(localpart__in=["dave", "erin"]).exists()
    assert Account.objects.get(localpart="bob").display_name == "Bob"
    assert AuditEntry.objects.count() == audited


def test_it_applies_all_rows_or_none(tenants, alice, bob):
    bad = ACCOUNTS + "carol@mallory.example,,1M,yes,\nfrank@example.test,,lots,yes,\n"
    report = csvio.import_csv("accounts", bad, apply=True, acting_user=alice)
    assert not report.applied and report.counts == {"created": 2, "updated": 1, "unchanged": 0, "error": 2}
    assert [(r.line, r.result, r.message) for r in report.rows[3:]] == [
        (5, "error", "domain mallory.example does not exist (add it with: manage.py domain add mallory.example)"),
        (6, "error", "quota: 'lots' is not a size (examples: 500M, 2G, 1048576)"),
    ]
    assert not Account.objects.filter(localpart__in=["dave", "erin"]).exists()
    report = csvio.import_csv("accounts", ACCOUNTS, apply=True, acting_user=alice)
    assert report.applied
    dave, erin = Account.objects.get(localpart="dave"), Account.objects.get(localpart="erin")
    assert (dave.quota, dave.display_name, dave.check_password("a good long password 1")) == (10 * MiB, "Dave", True)
    assert (erin.quota, erin.active) == (5 * MiB, False)
    again = csvio.import_csv("accounts", ACCOUNTS.replace(",a good long password 1", ","), acting_user=alice)
    assert [r.result for r in again.rows] == ["unchanged", "unchanged", "unchanged"]


def test_it_checks_limits_row_after_row(tenants, alice, bob, root):
    actions.set_domain_limits("example.test", max_accounts=2)
    report = csvio.import_csv("accounts", ACCOUNTS, acting_user=alice)
    assert [r.result for r in report.rows] == ["created", "updated", "error"]
    assert report.rows[2].message == "domain example.test may have at most 2 account(s)"


def test_it_refuses_a_file_that_is_not_a_table_of_addresses(tenants, alice):
    from accounts.errors import InvalidInput

    with pytest.raises(InvalidInput, match="must name the columns, among them address"):
        csvio.import_csv("accounts", "bob@example.test,1G\n", acting_user=alice)
    with pytest.raises(InvalidInput, match="unknown column\\(s\\): mailbox_size"):
        csvio.import_csv("accounts", "address,mailbox_size\n", acting_user=alice)


def test_it_imports_and_exports_aliases(tenants, alice, bob):
    text = "address,targets\nteam@example.test,bob@example.test x@elsewhere.invalid\ninfo@example.test,bob@example.test\n" \
           "@example.test,bob@example.test\nbad@example.test,\n"
    report = csvio.import_csv("aliases", text, acting_user=alice)
    assert [(r.address, r.result) for r in report.rows] == [
        ("team@example.test", "created"), ("info@example.test", "unchanged"), ("@example.test", "created"),
        ("bad@example.test", "error"),
    ]
    assert report.rows[3].message == "an alias needs at least one target"
    fixed = text.replace("bad@example.test,\n", "")
    assert csvio.import_csv("aliases", fixed, apply=True, acting_user=alice).applied
    exported = "".join(csvio.export_rows("aliases", acting_user=alice))
    assert exported.splitlines() == [
        "address,targets", "@example.test,bob@example.test", "info@example.test,bob@example.test",
        "team@example.test,bob@example.test x@elsewhere.invalid",
    ]
    assert "mallory" not in exported and set(Alias.objects.values_list("localpart", flat=True)) >= {"team", ""}


def test_it_exports_what_import_reads_without_passwords(tenants, alice, bob):
    exported = "".join(csvio.export_rows("accounts", acting_user=alice))
    assert exported.splitlines() == [
        "address,display_name,quota,active,messages_per_hour,recipients_per_day,quota_used",
        f"bob@example.test,Bob,{100 * MiB},yes,,,0",
    ]
    report = csvio.import_csv("accounts", exported, acting_user=alice)
    assert [r.result for r in report.rows] == ["unchanged"]


def test_it_imports_and_exports_through_the_api(tenants, as_user, bob):
    api = as_user(tenants["alice"], ["accounts:write"])
    response = api.client.post("/api/v1/accounts/import/", ACCOUNTS, content_type="text/csv", **api.headers)
    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["applied"], report["counts"]) == (False, {"created": 2, "updated": 1, "unchanged": 0, "error": 0})
    assert report["rows"][0] == {"line": 2, "address": "dave@example.test", "result": "created", "message": ""}
    upload = io.BytesIO(ACCOUNTS.encode())
    upload.name = "accounts.csv"
    response = api.client.post("/api/v1/accounts/import/?apply=true", {"file": upload}, **api.headers)
    assert response.json()["applied"] is True and Account.objects.filter(localpart="dave").exists()
    response = api.client.get("/api/v1/accounts/export/", **api.headers)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [line.split(",")[0] for line in lines] == ["address", "bob@example.test", "dave@example.test",
                                                       "erin@example.test"]
    # Aliases are another scope.
    assert api.client.get("/api/v1/aliases/export/", **api.headers).status_code == 403


def run(*args, stdin=""):
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr, stdin=io.StringIO(stdin))
    return stdout.getvalue()


def test_it_imports_and_exports_from_the_command_line(tenants, bob, tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(ACCOUNTS)
    out = run("bulk", "import", "accounts", str(path), "--as", "alice")
    assert out.splitlines() == [
        "line 2  dave@example.test  created",
        "line 3  bob@example.test   updated  display name",
        "line 4  erin@example.test  created",
        "dry run: 2 created, 1 updated, 0 unchanged, 0 error; run again with --apply to write the changes",
    ]
    assert not Account.objects.filter(localpart="dave").exists()
    with pytest.raises(CommandError, match="1 error: nothing was written"):
        run("bulk", "import", "accounts", "-", "--apply", "--as", "alice",
            stdin="address\ncarol@mallory.example\n")
    assert run("bulk", "import", "accounts", str(path), "--apply", "--as", "alice").endswith(
        "applied: 2 created, 1 updated, 0 unchanged, 0 error\n")
    entry = AuditEntry.objects.filter(action="account.create").latest("id")
    assert (entry.actor_name, entry.via) == ("alice", "cli")
    exported = run("bulk", "export", "accounts", "--as", "mallory")
    assert exported.splitlines()[1:] == [f"carol@mallory.example,Carol,{100 * MiB},yes,,,0"]

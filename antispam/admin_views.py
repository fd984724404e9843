"""The admin's dry run of a folder through the content filter (antispam.dryrun), at
/admin/antispam/dry-run/?account=ADDRESS&folder=NAME&page=N.

Superusers may try any account's folders; a domain admin only those of accounts in their
domains (Account.objects.visible_to, the one scoping rule); anyone else is refused, and an
account that is not theirs looks the same as one that does not exist. The page reads and
scores, and writes nothing (see antispam.dryrun).
"""
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from accounts.admin import administers_domains
from accounts.models import Account
from antispam import dryrun

ACTION_WORDS = {
    "none": "inbox",
    "tag": "marked as spam",
    "junk": "into Junk",
    "reject": "refused at SMTP time; into Junk once accepted",
    "unreadable": "not scored",
    "": "",
}


def _account(user, address):
    localpart, _, domain = address.strip().lower().rpartition("@")
    if not localpart or not domain:
        return None
    return (
        Account.objects.visible_to(user).select_related("domain")
        .filter(localpart=localpart, domain__name=domain).first()
    )


def _page_number(text):
    try:
        return max(1, int(text))
    except (TypeError, ValueError):
        return 1


def dry_run_view(request):
    user = request.user
    if not (user.is_superuser or administers_domains(request)):
        raise PermissionDenied
    address = request.GET.get("account", "").strip()
    folder_name = request.GET.get("folder", "")
    context = {
        **admin.site.each_context(request),
        "title": "Run a folder through the spam filter (dry run)",
        "address": address,
        "folder_name": folder_name,
    }
    if address:
        account = _account(user, address)
        if account is None:
            if not user.is_superuser:
                raise PermissionDenied  # not yours and unknown look the same
            context["error"] = f"There is no account {address}."
            return render(request, "antispam/dry_run.html", context, status=404)
        folders = list(account.folders.order_by("name"))
        context.update(account=account, folders=folders)
        folder = next((f for f in folders if f.name == folder_name), None)
        if folder_name and folder is None:
            context["error"] = f"{account.address} has no folder {folder_name}."
            return render(request, "antispam/dry_run.html", context, status=404)
        if folder is not None:
            number = _page_number(request.GET.get("page"))
            page = dryrun.run(folder, offset=(number - 1) * dryrun.PAGE_SIZE, limit=dryrun.PAGE_SIZE)
            context.update(
                folder=folder, page=page, number=number, first=page.offset + 1, last=page.offset + len(page.rows),
                rows=[(row, ACTION_WORDS.get(row.action, row.action), ACTION_WORDS.get(row.recorded, row.recorded))
                      for row in page.rows],
                counts=sorted(page.counts().items()),
            )
    return render(request, "antispam/dry_run.html", context)


dry_run_view = admin.site.admin_view(dry_run_view)

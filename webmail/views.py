"""Webmail views: parse the request, call webmail.mailbox (reads) or the actions
(webmail.actions, mailstore.actions), render. Scoped to request.account once."""
import re
from urllib.parse import urlencode

from django.contrib import messages as notices
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.errors import LoginThrottled
from mailstore import actions as store
from mailstore.models import Folder, Message
from webmail import actions, mailbox
from webmail.auth import account_required, current_account, safe_next, sign_in, sign_out
from webmail.forms import BulkForm, FolderForm, SignInForm
from webmail.message import Reading, body_document, safe_filename
from webmail.models import TrustedSender
from webmail.security import DOWNLOAD_POLICY, PREVIEW_POLICY, body_policy, page_csp


def _folder(request, folder_id):
    try:
        return mailbox.folder_of(request.account, folder_id)
    except Folder.DoesNotExist:
        raise Http404("no such folder") from None


def _message(folder, uid):
    try:
        return mailbox.message_of(folder, uid)
    except Message.DoesNotExist:
        raise Http404("no such message") from None


def _done(request, url):
    """After a POST: go to `url`. An htmx (boosted) request is told to fetch it itself
    (HX-Location), so the address bar shows that page and not the POST's URL."""
    if request.headers.get("HX-Request"):
        response = HttpResponse()
        response["HX-Location"] = url
        return response
    return redirect(url)


def _layout(request, folder=None):
    """What every signed-in page shows around its content."""
    folders = mailbox.folders_of(request.account)
    return {
        "account": request.account,
        "folders": folders,
        "tree": mailbox.folder_tree(request.account, folders),
        "current_folder": folder,
        "trash": mailbox.special_folder(request.account, mailbox.TRASH, folders),
        "junk": mailbox.special_folder(request.account, mailbox.JUNK, folders),
    }


# Signing in and out -------------------------------------------------------------------


@never_cache
@page_csp
@require_http_methods(["GET", "POST"])
def login(request):
    if current_account(request) is not None and request.method == "GET":
        return redirect(safe_next(request, reverse("webmail:index")))
    form = SignInForm(request.POST or None)
    error = None
    if request.method == "POST" and form.is_valid():
        try:
            account = sign_in(
                request, form.cleaned_data["address"], form.cleaned_data["password"], remember=form.cleaned_data["remember"]
            )
        except LoginThrottled as refusal:
            error = _("Too many failed sign-ins. Try again in %(seconds)s seconds.") % {"seconds": refusal.retry_after}
        else:
            if account is not None:
                return redirect(safe_next(request, reverse("webmail:index")))
            error = _("Wrong address or password.")
    status = 200 if error is None else 403
    return render(request, "webmail/login.html", {"form": form, "error": error, "next": safe_next(request, "")}, status=status)


@require_POST
def logout(request):
    sign_out(request)
    return redirect("webmail:login")


# The list ---------------------------------------------------------------------------------


@require_GET
@account_required
def index(request):
    inbox = Folder.objects.filter(account=request.account, name="INBOX").values_list("pk", flat=True).first()
    if inbox is None:
        raise Http404("this account has no INBOX")
    return redirect("webmail:folder", folder_id=inbox)


FILTER_LABELS = {
    "": gettext_lazy("All"),
    "unread": gettext_lazy("Unread"),
    "flagged": gettext_lazy("Flagged"),
    "attachments": gettext_lazy("With attachments"),
}


def _list_context(request, folder, query):
    page = mailbox.message_page(request.account, query, folder)
    base = reverse("webmail:folder", args=[folder.pk]) if folder is not None else reverse("webmail:search")
    show_to = folder is not None and folder.special_use in (mailbox.SENT, mailbox.DRAFTS)

    def link(**changes):
        params = query.params(**changes)
        return base + ("?" + urlencode(params) if params else "")

    sort_links = {}
    for name in mailbox.SORTS:
        if query.sort == name:
            sort_links[name] = link(sort=name, order="asc" if query.descending else "desc", page=1)
        else:
            sort_links[name] = link(sort=name, order="", page=1)
    return {
        "page": page,
        "query": query,
        "show_to": show_to,
        "list_url": link(),
        "sort_links": sort_links,
        "filter_links": [(name, FILTER_LABELS[name], link(filter=name, page=1)) for name in ("",) + mailbox.FILTERS],
        "next_url": link(page=page.number + 1) if page.has_next else None,
        "previous_url": link(page=page.number - 1) if page.has_previous else None,
        "all_folders": folder is None,
        "read_query": urlencode(query.params(page="")),
    }


@never_cache
@page_csp
@require_GET
@account_required
def folder(request, folder_id):
    folder = _folder(request, folder_id)
    query = mailbox.ListQuery.from_params(request.GET)
    if query.search.everywhere:
        return _done(request, reverse("webmail:search") + "?" + request.GET.urlencode())
    context = {**_layout(request, folder), **_list_context(request, folder, query)}
    return render(request, "webmail/folder.html", context)


@never_cache
@page_csp
@require_GET
@account_required
def search(request):
    """Search in every folder of the account."""
    query = mailbox.ListQuery.from_params(request.GET)
    query.search.everywhere = True
    context = {**_layout(request), **_list_context(request, None, query)}
    return render(request, "webmail/folder.html", context)


@require_POST
@account_required
def bulk(request, folder_id):
    folder = _folder(request, folder_id)
    form = BulkForm(request.POST)
    back = safe_next(request, reverse("webmail:folder", args=[folder.pk]))
    if not form.is_valid():
        notices.error(request, _("Select at least one message."))
        return _done(request, back)
    target = None
    if form.cleaned_data["action"] == "move":
        target = Folder.objects.filter(account=request.account, pk=form.cleaned_data.get("target") or 0).first()
        if target is None:
            notices.error(request, _("Choose a folder to move to."))
            return _done(request, back)
    try:
        actions.apply(request.account, folder, form.cleaned_data["uid"], form.cleaned_data["action"], target=target)
    except store.MailstoreError as error:
        notices.error(request, str(error))
    return _done(request, back)


# Reading ------------------------------------------------------------------------------------


def _allow_remote(request, message, once=False):
    if once:
        return True
    return bool(message.from_address) and TrustedSender.objects.filter(
        account=request.account, address=message.from_address.lower()
    ).exists()


@never_cache
@page_csp
@require_GET
@account_required
def message(request, folder_id, uid):
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    reading = Reading(message)
    query = mailbox.ListQuery.from_params(request.GET)
    trusted = _allow_remote(request, message)
    once = request.GET.get("images") == "1"
    summary = reading.html_summary(allow_remote=False) if reading.has_html else None
    previous_uid, next_uid = mailbox.neighbours(folder, message, query)
    keep = urlencode(query.params())
    context = {
        **_layout(request, folder),
        "message": message,
        "reading": reading,
        "body": None if reading.has_html else reading.body(),
        "attachments": reading.attachments(summary.cids if summary else ()),
        "remote_blocked": summary.remote_images if summary and not (trusted or once) else 0,
        "trusted": trusted,
        "images_once": once,
        "body_url": reverse("webmail:body", args=[folder.pk, uid]) + ("?images=1" if once else ""),
        "list_url": reverse("webmail:folder", args=[folder.pk]) + ("?" + keep if keep else ""),
        "previous_url": reverse("webmail:message", args=[folder.pk, previous_uid]) + ("?" + keep if keep else "") if previous_uid else None,
        "next_url": reverse("webmail:message", args=[folder.pk, next_uid]) + ("?" + keep if keep else "") if next_uid else None,
        "next_uid": next_uid,
        "keep": keep,
    }
    return render(request, "webmail/message.html", context)


@never_cache
@xframe_options_sameorigin
@require_GET
@account_required
def body(request, folder_id, uid):
    """The HTML body document for the sandboxed frame (see webmail.message)."""
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    allow = _allow_remote(request, message, once=request.GET.get("images") == "1")
    document, _summary = body_document(Reading(message), allow_remote=allow)
    response = HttpResponse(document, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = body_policy(remote_images=allow)
    response["Referrer-Policy"] = "no-referrer"
    return response


@never_cache
@require_GET
@account_required
def part(request, folder_id, uid, number):
    """An attachment: downloaded byte-identical, or shown inline if it is safe to preview."""
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    try:
        numbers = tuple(int(n) for n in number.split("."))
    except ValueError:
        raise Http404("no such part") from None
    reading = Reading(message)
    found = reading.part(numbers)
    if found is None:
        raise Http404("no such part")
    inline = request.GET.get("inline") == "1" and found.previewable
    data = reading.part_bytes(found)
    content_type = found.content_type if _TOKEN_TYPE.fullmatch(found.content_type) else "application/octet-stream"
    if content_type == "text/html" and not inline:
        content_type = "application/octet-stream"  # never rendered by the browser on our origin
    if found.node["type"] == "text" and _CHARSET.fullmatch(found.charset or ""):
        content_type += f"; charset={found.charset}"
    response = HttpResponse(data, content_type=content_type)
    disposition = "inline" if inline else "attachment"
    response["Content-Disposition"] = _disposition(disposition, found.filename)
    response["Content-Security-Policy"] = PREVIEW_POLICY if inline else DOWNLOAD_POLICY
    if inline:
        response["X-Frame-Options"] = "SAMEORIGIN"
    return response


# What a sender's Content-Type may put in our response header (anything else is bytes).
_TOKEN_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_CHARSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,39}")


def _disposition(kind, filename):
    return content_disposition_header(kind == "attachment", filename) or kind


@never_cache
@require_GET
@account_required
def raw(request, folder_id, uid):
    """The message source, shown as text or downloaded as an .eml file."""
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    data = Reading(message).raw()
    download = request.GET.get("download") == "1"
    response = HttpResponse(data, content_type="message/rfc822" if download else "text/plain; charset=utf-8")
    name = safe_filename((message.subject or "message")[:80]) or "message"
    response["Content-Disposition"] = _disposition("attachment" if download else "inline", f"{name}.eml")
    response["Content-Security-Policy"] = DOWNLOAD_POLICY
    return response


@require_POST
@account_required
def mark_read(request, folder_id, uid):
    folder = _folder(request, folder_id)
    actions.mark_read(folder, uid)
    return HttpResponse(status=204)


@require_POST
@account_required
def message_action(request, folder_id, uid):
    """One message's action from the reading view; then the next message, or the list."""
    folder = _folder(request, folder_id)
    action = request.POST.get("action", "")
    target = None
    if action == "move":
        target = Folder.objects.filter(account=request.account, pk=request.POST.get("target") or 0).first()
    try:
        actions.apply(request.account, folder, [uid], action, target=target)
    except store.MailstoreError as error:
        notices.error(request, str(error))
        return _done(request, safe_next(request, reverse("webmail:message", args=[folder.pk, uid])))
    if action in ("read", "flag", "unflag"):
        return _done(request, safe_next(request, reverse("webmail:message", args=[folder.pk, uid])))
    following = request.POST.get("then", "")
    if following.isdigit():
        return _done(request, reverse("webmail:message", args=[folder.pk, int(following)]) + _keep(request))
    return _done(request, reverse("webmail:folder", args=[folder.pk]) + _keep(request))


def _keep(request):
    keep = request.POST.get("keep", "")
    return "?" + keep if keep and "//" not in keep and "\n" not in keep else ""


@require_POST
@account_required
def trust_sender(request, folder_id, uid):
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    try:
        actions.trust_sender(request.account, message.from_address)
    except actions.ActionError as error:
        notices.error(request, str(error))
    return _done(request, reverse("webmail:message", args=[folder.pk, uid]))


# Folders -----------------------------------------------------------------------------------------


@never_cache
@page_csp
@require_GET
@account_required
def tree(request):
    """The folder tree alone (htmx refreshes it on new mail); ?folder= marks the current one."""
    current = request.GET.get("folder", "")
    folder = Folder.objects.filter(account=request.account, pk=current).first() if current.isdigit() else None
    return render(request, "webmail/_tree.html", _layout(request, folder))


@never_cache
@page_csp
@require_GET
@account_required
def folders(request):
    context = _layout(request)
    context["create_form"] = FolderForm(account=request.account)
    return render(request, "webmail/folders.html", context)


def _folder_change(request, change, success):
    try:
        change()
    except store.MailstoreError as error:
        notices.error(request, str(error))
    else:
        notices.success(request, success)
    return _done(request, reverse("webmail:folders"))


@require_POST
@account_required
def folder_create(request):
    form = FolderForm(request.POST, account=request.account)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                notices.error(request, error)
        return _done(request, reverse("webmail:folders"))
    name = form.cleaned_data["full_name"]
    return _folder_change(request, lambda: store.create_folder(request.account, name), _("Folder created."))


@require_POST
@account_required
def folder_rename(request, folder_id):
    folder = _folder(request, folder_id)
    form = FolderForm(request.POST, account=request.account, exclude=folder)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                notices.error(request, error)
        return _done(request, reverse("webmail:folders"))
    name = form.cleaned_data["full_name"]
    return _folder_change(request, lambda: store.rename_folder(request.account, folder.name, name), _("Folder renamed."))


@require_POST
@account_required
def folder_delete(request, folder_id):
    folder = _folder(request, folder_id)
    return _folder_change(request, lambda: store.delete_folder(request.account, folder.name), _("Folder deleted."))


@require_POST
@account_required
def folder_subscribe(request, folder_id):
    folder = _folder(request, folder_id)
    subscribed = request.POST.get("subscribed") == "1"
    return _folder_change(
        request, lambda: store.set_subscribed(request.account, folder.name, subscribed),
        _("Subscribed.") if subscribed else _("Unsubscribed."),
    )


@require_POST
@account_required
def folder_empty(request, folder_id):
    folder = _folder(request, folder_id)
    try:
        removed = actions.empty_folder(request.account, folder)
    except store.MailstoreError as error:
        notices.error(request, str(error))
    else:
        notices.success(request, _("%(count)s messages deleted for good.") % {"count": len(removed)})
    return _done(request, safe_next(request, reverse("webmail:folder", args=[folder.pk])))


# Room for the next pieces ------------------------------------------------------------------------


@require_GET
@account_required
def compose(request):
    """Composing comes next (issue 6): the URL and the button exist already."""
    raise Http404("composing is not available yet")


@require_GET
@account_required
def contacts(request):
    raise Http404("the address book is not available yet")


# The settings menu, in order. The pages other than "privacy" are placeholders for the
# next pieces of issue 6 (and filters/vacation/forwarding for Sieve, spam for anti-spam).
SETTINGS_SECTIONS = {
    "account": gettext_lazy("Account"),
    "identities": gettext_lazy("Identities and signature"),
    "language": gettext_lazy("Language"),
    "privacy": gettext_lazy("Remote content"),
    "filters": gettext_lazy("Filters"),
    "vacation": gettext_lazy("Vacation reply"),
    "forwarding": gettext_lazy("Forwarding"),
    "spam": gettext_lazy("Spam"),
}


@never_cache
@page_csp
@require_GET
@account_required
def settings_page(request, section="privacy"):
    if section not in SETTINGS_SECTIONS:
        raise Http404("no such settings section")
    context = {
        **_layout(request),
        "sections": list(SETTINGS_SECTIONS.items()),
        "section": section,
        "section_label": SETTINGS_SECTIONS[section],
        "trusted_senders": TrustedSender.objects.filter(account=request.account) if section == "privacy" else None,
    }
    return render(request, "webmail/settings.html", context)


@require_POST
@account_required
def distrust_sender(request):
    actions.distrust_sender(request.account, request.POST.get("address", ""))
    return _done(request, reverse("webmail:settings_section", args=["privacy"]))

"""Webmail views: parse the request, call webmail.mailbox (reads) or the actions
(webmail.actions, mailstore.actions), render. Scoped to request.account once."""
import email.utils
import re
from urllib.parse import urlencode

from django.contrib import messages as notices
from django.conf import settings
from django.db.models import Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.template.defaultfilters import filesizeformat
from django.utils import formats, timezone
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.errors import LoginThrottled
from mailstore import actions as store
from mailstore.models import Folder, Message
from webmail import actions, compose, mailbox
from webmail.auth import account_required, current_account, keep_signed_in, safe_next, sign_in, sign_out
from accounts import actions as accounts_actions
from accounts.errors import AccountsError
from webmail import contacts as contacts_module
from webmail import sieve_pages
from webmail.forms import (
    BulkForm,
    ComposeForm,
    DisplayNameForm,
    FolderForm,
    PasswordChangeForm,
    RemoteContentForm,
    SignatureForm,
    SignInForm,
)
from webmail.message import Reading, body_document, safe_filename
from webmail.models import Contact, TrustedSender
from webmail.templatetags.webmail_tags import sender_name
from webmail.security import DOWNLOAD_POLICY, PREVIEW_POLICY, body_policy, page_csp
from secmail import compose as secmail_compose
from secmail.errors import SecmailError
from secmail.reading import open_reading


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
    grouping = actions.preferences_of(request.account).conversations
    conversations = grouping and mailbox.groups_conversations(query, folder)
    if conversations:
        page = mailbox.conversation_page(request.account, query, folder)
    else:
        page = mailbox.message_page(request.account, query, folder)
    base = reverse("webmail:folder", args=[folder.pk]) if folder is not None else reverse("webmail:search")
    show_to = folder is not None and folder.special_use in (mailbox.SENT, mailbox.DRAFTS)

    def link(**changes):
        params = query.params(**changes)
        return base + ("?" + urlencode(params) if params else "")

    _prepare_rows(page.messages, read_query=urlencode(query.params(page="")), conversations=conversations, show_to=show_to)
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
        "conversations": conversations,
        "grouping": grouping,
    }


PREVIEW_CHARS = 140


def _prepare_rows(rows, *, read_query, conversations, show_to=False):
    """What each list row shows that the template would otherwise work out per row (link,
    short preview, dates, size): a page has 50 rows, and per-row tag and filter work in the
    template was most of a list page's time (bench/webmail.py). Dates are formatted once a
    day and minute shown."""
    message_url = reverse("webmail:message", args=[1234567, 7654321]).replace("1234567", "{0}").replace("7654321", "{1}")
    conversation_url = reverse("webmail:conversation", args=[1234567, 7654321]).replace("1234567", "{0}").replace("7654321", "{1}")
    suffix = "?" + read_query if read_query else ""
    today = timezone.localdate()
    days, minutes = {}, {}  # formatted once per day and minute of the day shown
    for row in rows:
        threaded = conversations and row.get("thread_count", 1) > 1
        row["url"] = (conversation_url if threaded else message_url).format(row["folder_id"], row["uid"]) + suffix
        row["threaded"] = threaded
        row["unread"] = bool(row.get("thread_unread")) if conversations else not row["seen"]
        preview = row.get("blob__preview") or ""
        row["preview"] = preview if len(preview) <= PREVIEW_CHARS else preview[: PREVIEW_CHARS - 1].rstrip() + "…"
        when = timezone.localtime(row["sent_date"] or row["internaldate"])
        row["date_iso"] = when.isoformat() if row["sent_date"] else ""
        day, minute = when.date(), (when.hour, when.minute)
        if day not in days:
            days[day] = (
                formats.date_format(when, "DATE_FORMAT"),
                formats.date_format(when, "MONTH_DAY_FORMAT" if day.year == today.year else "SHORT_DATE_FORMAT"),
            )
        if minute not in minutes:
            minutes[minute] = formats.time_format(when, "TIME_FORMAT")
        long_day, short_day = days[day]
        row["date_title"] = f"{long_day}, {minutes[minute]}" if row["sent_date"] else ""
        row["date_short"] = minutes[minute] if day == today else short_day
        row["size_text"] = filesizeformat(row["size"])
        row["who"] = sender_name(row["to_display"] if show_to else row["from_display"])


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
    uids = form.cleaned_data["uid"]
    if request.POST.get("conversations") == "1":  # the rows stood for whole conversations
        uids = mailbox.thread_uids(folder, uids)
    try:
        actions.apply(request.account, folder, uids, form.cleaned_data["action"], target=target)
    except store.MailstoreError as error:
        notices.error(request, str(error))
    return _done(request, back)


@require_POST
@account_required
def list_mode(request):
    """Group the message list by conversation, or not (remembered for the account)."""
    actions.set_preferences(request.account, conversations=request.POST.get("conversations") == "1")
    return _done(request, safe_next(request, reverse("webmail:index")))


# Reading ------------------------------------------------------------------------------------


def _allow_remote(request, message, once=False):
    if once or actions.preferences_of(request.account).remote_content == "always":
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
    security, reading = open_reading(request, message, Reading(message))  # secmail: verify, decrypt
    query = mailbox.ListQuery.from_params(request.GET)
    encrypted = bool(security and security.encrypted)  # EFAIL: never remote content in it
    trusted = _allow_remote(request, message) and not encrypted
    once = request.GET.get("images") == "1" and not encrypted
    summary = reading.html_summary(allow_remote=False) if reading.has_html else None
    previous_uid, next_uid = mailbox.neighbours(folder, message, query)
    keep = urlencode(query.params())
    context = {
        **_layout(request, folder),
        "message": message,
        "reading": reading,
        "security": security,
        "body": None if reading.has_html else reading.body(),
        "attachments": reading.attachments(summary.cids if summary else ()),
        "remote_blocked": summary.remote_images if summary and not (trusted or once or encrypted) else 0,
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
@page_csp
@require_GET
@account_required
def conversation(request, folder_id, uid):
    """The conversation of a message: its messages oldest first, the read ones folded
    (the newest and the unread ones open), replies from Sent among them."""
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    query = mailbox.ListQuery.from_params(request.GET)
    thread, left_out = mailbox.conversation_of(request.account, folder, message)
    entries = [
        _conversation_entry(item, folder, is_open=not item.seen or i == len(thread) - 1, request=request) for i, item in enumerate(thread)
    ]
    keep = urlencode(query.params())
    latest = thread[-1]
    context = {
        **_layout(request, folder),
        "message": message,
        "subject": thread[0].subject or latest.subject,
        "entries": entries,
        "left_out": left_out,
        "latest": latest,
        "list_url": reverse("webmail:folder", args=[folder.pk]) + ("?" + keep if keep else ""),
        "keep": keep,
    }
    return render(request, "webmail/conversation.html", context)


@require_POST
@account_required
def conversation_action(request, folder_id, uid):
    """An action on the whole conversation from its page (actions.apply_to_conversation);
    then the conversation again after marking it read, else the list."""
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    action = request.POST.get("action", "")
    target = None
    if action == "move":
        target = Folder.objects.filter(account=request.account, pk=request.POST.get("target") or 0).first()
        if target is None:
            notices.error(request, _("Choose a folder to move to."))
            return _done(request, reverse("webmail:conversation", args=[folder.pk, uid]) + _keep(request))
    try:
        actions.apply_to_conversation(request.account, folder, message.thread_key, action, target=target)
    except store.MailstoreError as error:
        notices.error(request, str(error))
        return _done(request, reverse("webmail:conversation", args=[folder.pk, uid]) + _keep(request))
    if action == "read":
        return _done(request, reverse("webmail:conversation", args=[folder.pk, uid]) + _keep(request))
    return _done(request, reverse("webmail:folder", args=[folder.pk]) + _keep(request))


@never_cache
@page_csp
@require_GET
@account_required
def conversation_part(request, folder_id, uid):
    """One folded message of a conversation, fetched when the reader unfolds it."""
    folder = _folder(request, folder_id)
    entry = _conversation_entry(_message(folder, uid), folder, is_open=True, request=request)
    return render(request, "webmail/_conversation_body.html", {"entry": entry})


def _conversation_entry(item, folder, *, is_open, request=None):
    """What the conversation page shows of one message; only an open one is parsed."""
    entry = {"message": item, "open": is_open, "in_other_folder": item.folder_id != folder.pk}
    if is_open:
        security, reading = open_reading(request, item, Reading(item))  # secmail: verify, decrypt
        summary = reading.html_summary(allow_remote=False) if reading.has_html else None
        entry.update(
            security=security,
            html=reading.has_html, body=None if reading.has_html else reading.body(),
            attachments=reading.attachments(summary.cids if summary else ()),
        )
    return entry


@never_cache
@xframe_options_sameorigin
@require_GET
@account_required
def body(request, folder_id, uid):
    """The HTML body document for the sandboxed frame (see webmail.message)."""
    folder = _folder(request, folder_id)
    message = _message(folder, uid)
    security, reading = open_reading(request, message, Reading(message))  # secmail: verify, decrypt
    encrypted = bool(security and security.encrypted)  # EFAIL: never remote content in it
    allow = _allow_remote(request, message, once=request.GET.get("images") == "1") and not encrypted
    document, _summary = body_document(reading, allow_remote=allow)
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
    _security, reading = open_reading(request, message, Reading(message))  # parts of the decrypted message
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


def _reference(request, value):
    """The (folder, message) named by "folder_id:uid" in the user's account, or (None, None)."""
    folder_id, _colon, uid = (value or "").partition(":")
    if not (folder_id.isdigit() and uid.isdigit()):
        return None, None
    folder = Folder.objects.filter(account=request.account, pk=int(folder_id)).first()
    if folder is None:
        return None, None
    found = Message.objects.select_related("blob").filter(folder=folder, uid=int(uid)).first()
    return (folder, found) if found is not None else (None, None)


def _compose_start(request, identities):
    """(initial form data, the message whose attachments are offered to keep)."""
    account = request.account
    for key in ("reply", "replyall", "forward", "draft"):
        if key not in request.GET:
            continue
        folder, original = _reference(request, request.GET[key])
        if original is None:
            raise Http404("no such message")
        reference = f"{folder.pk}:{original.uid}"
        if key == "forward" and request.GET.get("as") == "attachment":
            initial = {
                "from_address": account.address, "subject": compose.forward_subject(original.subject or ""),
                "body": _signed("", request), "attach_message": reference,
            }
            return initial, None
        if key == "forward":
            security, opened = open_reading(request, original, Reading(original))  # secmail
            draft = compose.forward_draft(
                account, identities, original, heading=_("---------- Forwarded message ----------"),
                labels={"From": _("From"), "Date": _("Date"), "Subject": _("Subject"), "To": _("To"), "Cc": _("Cc")},
                reading=opened,
            )
            if security and security.encrypted:
                # the decrypted text under its real subject, sent encrypted again; the stored
                # parts are ciphertext, so none is offered to keep
                return {**vars(draft), "secmail_encrypt": "1", "secmail_kind": security.scheme}, None
            return {**vars(draft), "source": reference}, original
        if key == "draft":
            draft = compose.resume_draft(account, original)
            return {**vars(draft), "source": reference, "draft": reference}, original
        # secmail: quote the decrypted text under its real subject, and keep encrypting
        security, opened = open_reading(request, original, Reading(original))
        draft = compose.reply_draft(
            account, identities, original, everyone=key == "replyall", attribution=_("On {date}, {sender} wrote:"),
            reading=opened,
        )
        draft.body = _signed("", request) + draft.body
        encrypted = {"secmail_encrypt": "1", "secmail_kind": security.scheme} if security and security.encrypted else {}
        return {**vars(draft), "answered": reference, **encrypted}, None
    initial = {"from_address": account.address, "to": request.GET.get("to", "")[:2000], "body": _signed("", request)}
    return initial, None


def _signed(body, request):
    """`body` with the user's signature after the usual "-- " line (RFC 3676 §4.3)."""
    signature = actions.preferences_of(request.account).signature.strip("\r\n")
    return f"{body}\n\n-- \n{signature}\n" if signature else body


def _compose_draft(request, form):
    """The compose.Draft the submitted form describes: uploads and the kept parts."""
    data = form.cleaned_data
    draft = compose.Draft(
        from_address=data["from_address"].strip(), to=data["to"], cc=data["cc"], bcc=data["bcc"],
        subject=data["subject"], body=data["body"], html=data["html"],
        in_reply_to=data["in_reply_to"], references=data["references"],
        display_name=request.account.display_name if data["from_address"].strip().lower() == request.account.address.lower() else "",
    )
    _folder_unused, source = _reference(request, data["source"])
    if source is not None:
        for number in request.POST.getlist("keep"):
            try:
                numbers = tuple(int(n) for n in number.split("."))
            except ValueError:
                continue
            attachment = compose.part_attachment(source, numbers)
            if attachment is not None:
                draft.attachments.append(attachment)
    _folder_unused, whole = _reference(request, data["attach_message"])
    if whole is not None:
        draft.attachments.append(compose.message_attachment(whole))
    for upload in request.FILES.getlist("attachments"):
        if upload.size > settings.MAILSUITE_MESSAGE_SIZE_LIMIT:
            raise compose.SendRefused("552 5.3.4 " + _("The attachment %(name)s is larger than the size limit.") % {"name": upload.name})
        draft.attachments.append(
            compose.Attachment(safe_filename(upload.name) or "attachment", upload.content_type or "application/octet-stream", upload.read())
        )
    return draft


def _refusal_text(refusal):
    """An SMTP-style reply as the user reads it: without the codes."""
    return re.sub(r"^\d{3}(?:[ -]\d\.\d{1,3}\.\d{1,3})?\s*", "", str(refusal))


@never_cache
@page_csp
@require_http_methods(["GET", "POST"])
@account_required
def compose_view(request):
    """Compose, reply, forward, resume a draft; POST sends, saves or autosaves."""
    identities = compose.identities_of(request.account)
    if request.method == "GET":
        initial, source = _compose_start(request, identities)
        form = ComposeForm(initial=initial)
        return _compose_page(request, form, identities, source)
    form = ComposeForm(request.POST)
    action = request.POST.get("action", "send")
    autosave = action == "autosave"
    if not form.is_valid():
        if autosave:
            return JsonResponse({"error": _("The draft could not be saved.")}, status=400)
        return _compose_page(request, form, identities, None, status=400)
    replaces = _reference(request, form.cleaned_data["draft"])
    replaces = (replaces[0], replaces[1].uid) if replaces[1] is not None else None
    try:
        draft = _compose_draft(request, form)
        if action in ("save", "autosave"):
            saved = compose.save_draft(request.account, draft, replaces=replaces)
        else:
            compose.send(request.account, draft, client_ip=request.META.get("REMOTE_ADDR"), replaces=replaces,
                         protect=secmail_compose.protector(request, draft))
    except SecmailError as refusal:  # secmail: no unlocked key to sign with, or a recipient without a key
        form.add_error(None, str(refusal))
        _folder_unused, source = _reference(request, form.cleaned_data["source"])
        return _compose_page(request, form, identities, source, status=400)
    except compose.SendRefused as refusal:
        if autosave:
            return JsonResponse({"error": _refusal_text(refusal)}, status=400)
        field = "from_address" if " 5.7.1 " in str(refusal) and "send as" in str(refusal) else None
        form.add_error(field, _refusal_text(refusal))
        _folder_unused, source = _reference(request, form.cleaned_data["source"])
        return _compose_page(request, form, identities, source, status=400)
    except store.OverQuota:
        message = _("Your mailbox is full: the draft could not be saved.")
        if autosave:
            return JsonResponse({"error": message}, status=400)
        form.add_error(None, message)
        return _compose_page(request, form, identities, None, status=400)
    if action in ("save", "autosave"):
        reference = f"{saved.folder_id}:{saved.uid}"
        kept = [part.number_text for part in Reading(saved).attachments()]
        if autosave:
            return JsonResponse({"draft": reference, "keep": kept})
        notices.success(request, _("Draft saved."))
        return _done(request, reverse("webmail:compose") + "?draft=" + reference)
    answered = _reference(request, form.cleaned_data["answered"])
    if answered[1] is not None:
        store.store_flags(answered[0], [answered[1].uid], mode="add", flags=["\\Answered"])
    notices.success(request, _("Message sent."))
    return _done(request, reverse("webmail:index"))


def _compose_page(request, form, identities, source, status=200):
    kept = compose.kept_parts(source) if source is not None else []
    chosen = set(request.POST.getlist("keep")) if request.method == "POST" else None
    context = {
        **_layout(request),
        "form": form,
        "identities": identities,
        "kept": [(part, chosen is None or part.number_text in chosen) for part, _reading in kept],
        "size_limit": settings.MAILSUITE_MESSAGE_SIZE_LIMIT,
        "attached_message": _reference(request, form["attach_message"].value())[1],
    }
    return render(request, "webmail/compose.html", context, status=status)


@never_cache
@page_csp
@require_http_methods(["GET", "POST"])
@account_required
def contacts(request):
    """The address book: list and search, add, edit, delete, collect senders, vCard import."""
    if request.method == "POST":
        return _contacts_change(request)
    actions.harvest_contacts(request.account)
    query = request.GET.get("q", "").strip()[:200]
    entries = Contact.objects.filter(account=request.account)
    if query:
        entries = entries.filter(Q(key__contains=query.lower()) | Q(name__icontains=query))
    editing = request.GET.get("edit", "")
    context = {
        **_layout(request),
        "contacts": entries[:1000],
        "query": None,
        "contact_query": query,
        "editing": int(editing) if editing.isdigit() else None,
    }
    return render(request, "webmail/contacts.html", context)


def _contacts_change(request):
    what = request.POST.get("form", "")
    account = request.account
    try:
        if what in ("add", "edit"):
            contact_id = request.POST.get("id", "")
            contact = actions.save_contact(
                account, request.POST.get("address", ""), request.POST.get("name", ""),
                contact_id=int(contact_id) if what == "edit" and contact_id.isdigit() else None,
            )
            notices.success(request, _("Saved %(address)s.") % {"address": contact.address})
        elif what == "delete" and request.POST.get("id", "").isdigit():
            actions.delete_contact(account, int(request.POST["id"]))
            notices.success(request, _("Contact deleted."))
        elif what == "collect":
            count = actions.collect_senders(account)
            notices.success(request, _("%(count)s contacts added from your mail.") % {"count": count})
        elif what == "import":
            upload = request.FILES.get("vcards")
            if upload is None or upload.size > contacts_module.MAX_VCARD_BYTES:
                notices.error(request, _("Choose a vCard file (.vcf) of at most 2 MB."))
            else:
                cards = contacts_module.parse_vcards(upload.read().decode("utf-8", "replace"))
                count = actions.import_contacts(account, cards)
                notices.success(request, _("%(count)s contacts imported.") % {"count": count})
    except actions.ActionError as error:
        notices.error(request, str(error))
    return _done(request, reverse("webmail:contacts"))


@never_cache
@require_GET
@account_required
def contacts_export(request):
    data = contacts_module.to_vcards(Contact.objects.filter(account=request.account))
    response = HttpResponse(data, content_type="text/vcard; charset=utf-8")
    response["Content-Disposition"] = _disposition("attachment", "contacts.vcf")
    return response


@never_cache
@require_GET
@account_required
def contacts_suggest(request):
    """Autocomplete for To/Cc/Bcc: [{"name", "address", "text"}] for ?q=."""
    actions.harvest_contacts(request.account)
    found = contacts_module.suggestions(request.account, request.GET.get("q", "")[:200])
    return JsonResponse({"contacts": [
        {"name": c.name, "address": c.address, "text": email.utils.formataddr((c.name, c.address)) if c.name else c.address}
        for c in found
    ]})


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
    "sieve": gettext_lazy("Sieve script"),
    "spam": gettext_lazy("Spam"),
}
SIEVE_SECTIONS = ("filters", "vacation", "forwarding", "sieve")


def _settings_forms(request, section, bound=None):
    """The forms a settings section shows; `bound` replaces the one being submitted."""
    account = request.account
    preferences = actions.preferences_of(account)
    forms = {}
    if section == "account":
        forms["name_form"] = DisplayNameForm(initial={"display_name": account.display_name})
        forms["password_form"] = PasswordChangeForm()
    elif section == "identities":
        forms["signature_form"] = SignatureForm(initial={"signature": preferences.signature})
        forms["identities"] = compose.identities_of(account)
    elif section == "privacy":
        forms["remote_form"] = RemoteContentForm(initial={"remote_content": preferences.remote_content})
        forms["trusted_senders"] = TrustedSender.objects.filter(account=account)
    elif section == "language":
        forms["languages"] = settings.LANGUAGES
    elif section in SIEVE_SECTIONS:
        forms.update(sieve_pages.context(account, section))
    forms.update(bound or {})
    return forms


def _settings_render(request, section, bound=None, status=200):
    if section not in SETTINGS_SECTIONS:
        raise Http404("no such settings section")
    context = {
        **_layout(request),
        "sections": list(SETTINGS_SECTIONS.items()),
        "section": section,
        "section_label": SETTINGS_SECTIONS[section],
        **_settings_forms(request, section, bound),
    }
    return render(request, "webmail/settings.html", context, status=status)


@never_cache
@page_csp
@require_http_methods(["GET", "POST"])
@account_required
def settings_page(request, section="privacy"):
    if section not in SETTINGS_SECTIONS:
        raise Http404("no such settings section")
    if request.method == "GET":
        return _settings_render(request, section)
    bound = _settings_change(request, section)
    if bound is None:
        notices.success(request, _("Settings saved."))
        return _done(request, reverse("webmail:settings_section", args=[section]))
    return _settings_render(request, section, bound, status=400)


def _settings_change(request, section):
    """Apply a settings POST; None when done, else the bound forms with their errors."""
    account = request.account
    what = request.POST.get("form", "")
    if section == "account" and what == "name":
        form = DisplayNameForm(request.POST)
        if not form.is_valid():
            return {"name_form": form}
        accounts_actions.set_display_name(account.address, form.cleaned_data["display_name"])
        return None
    if section == "account" and what == "password":
        form = PasswordChangeForm(request.POST)
        if form.is_valid():
            if not account.check_password(form.cleaned_data["current"]):
                form.add_error("current", _("This is not your current password."))
            else:
                try:
                    accounts_actions.set_password(account.address, form.cleaned_data["new"])
                except AccountsError as error:
                    form.add_error("new", str(error))
                else:
                    account.refresh_from_db()
                    keep_signed_in(request, account)
                    return None
        return {"password_form": form}
    if section == "identities" and what == "signature":
        form = SignatureForm(request.POST)
        if not form.is_valid():
            return {"signature_form": form}
        actions.set_preferences(account, signature=form.cleaned_data["signature"])
        return None
    if section == "privacy" and what == "remote":
        form = RemoteContentForm(request.POST)
        if not form.is_valid():
            return {"remote_form": form}
        actions.set_preferences(account, remote_content=form.cleaned_data["remote_content"])
        return None
    if section in SIEVE_SECTIONS:
        return sieve_pages.change(request, section)
    raise Http404("nothing to change here")


@require_POST
@account_required
def distrust_sender(request):
    actions.distrust_sender(request.account, request.POST.get("address", ""))
    return _done(request, reverse("webmail:settings_section", args=["privacy"]))

"""Webmail pages for moving mail in and out (issue 12), under /settings/transfer/:
upload an mbox / Maildir ZIP / EML ZIP (imported by a TransferJob on a Celery worker,
its progress polled as JSON), download an account or folder as a ZIP (streamed), and
the user's external POP3/IMAP accounts (MRA).

Views parse the request, call migration.actions / migration.fetching, render: no
business rules here. Everything is scoped to request.account (webmail.auth).
"""
from asgiref.sync import sync_to_async
from django import forms
from django.contrib import messages as notices
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.actions import channel
from mailsuite.lib.sizes import format_size
from mailstore.models import Folder
from migration import actions, archive, fetching
from migration.models import ExternalAccount, TransferJob
from migration.remote import DEFAULT_PORTS, RemoteError
from migration.sources import SourceError
from webmail.auth import account_required
from webmail.security import DOWNLOAD_POLICY, page_csp
from webmail.views import SETTINGS_SECTIONS, _layout

# An upload larger than this is refused before it is read (the CLI has no limit).
UPLOAD_LIMIT = 4 * 1024**3
JOBS_SHOWN = 20


def _folder_choices(account, first):
    return [("", first)] + [(name, name) for name in Folder.objects.filter(account=account).order_by("name")
                                                        .values_list("name", flat=True)]


class UploadForm(forms.Form):
    file = forms.FileField(label=gettext_lazy("File"))
    folder = forms.ChoiceField(label=gettext_lazy("Into"), required=False)

    def __init__(self, *args, account, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["folder"].choices = _folder_choices(account, _("(the folders in the file; top level = Inbox)"))
        self.fields["file"].widget.attrs["accept"] = ".mbox,.zip,.eml,application/mbox,application/zip,message/rfc822"


class ExportForm(forms.Form):
    folder = forms.ChoiceField(label=gettext_lazy("Folder"), required=False)
    format = forms.ChoiceField(label=gettext_lazy("Format"), choices=[
        ("mbox", gettext_lazy("mbox (one file per folder)")), ("maildir", gettext_lazy("Maildir (one file per message)")),
    ])

    def __init__(self, *args, account, **kwargs):
        kwargs.setdefault("label_suffix", "")
        kwargs.setdefault("auto_id", "id_export_%s")  # the upload form on the same page has a "folder" too
        super().__init__(*args, **kwargs)
        self.fields["folder"].choices = _folder_choices(account, _("(all folders)"))


class ExternalAccountForm(forms.Form):
    protocol = forms.ChoiceField(label=gettext_lazy("Protocol"), choices=ExternalAccount.Protocol.choices)
    host = forms.CharField(label=gettext_lazy("Server"), max_length=255)
    port = forms.IntegerField(label=gettext_lazy("Port"), required=False, min_value=1, max_value=65535,
                              widget=forms.NumberInput(attrs={"placeholder": gettext_lazy("the usual one (993, 995, 143 or 110)")}))
    tls = forms.ChoiceField(label=gettext_lazy("Security"), choices=ExternalAccount.TLS.choices)
    verify_certificate = forms.BooleanField(label=gettext_lazy("Check the server's certificate"), required=False, initial=True)
    username = forms.CharField(label=gettext_lazy("User name"), max_length=320)
    password = forms.CharField(label=gettext_lazy("Password"), max_length=500, widget=forms.PasswordInput)
    remote_folders = forms.CharField(label=gettext_lazy("Remote folders (IMAP)"), required=False, max_length=5000,
                                     widget=forms.Textarea(attrs={"rows": 2, "placeholder": gettext_lazy(
                                         "one a line; empty: INBOX; * for all")}))
    local_folder = forms.ChoiceField(label=gettext_lazy("Deliver into"))
    keep = forms.BooleanField(label=gettext_lazy("Leave the messages on the server"), required=False, initial=True)

    def __init__(self, *args, account, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["local_folder"].choices = _folder_choices(account, "")[1:]
        self.fields["local_folder"].initial = "INBOX"


class ExternalAccountEditForm(ExternalAccountForm):
    enabled = forms.BooleanField(label=gettext_lazy("Fetch new mail from it"), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["password"].required = False
        self.fields["password"].widget.attrs["placeholder"] = _("empty: the stored one is kept")


def _page(request, template, context, status=200):
    context = {
        **_layout(request),
        "sections": list(SETTINGS_SECTIONS.items()),
        "section": "transfer",
        "section_label": context.pop("title"),
        **context,
    }
    return render(request, template, context, status=status)


def _job_of(request, job_id):
    job = TransferJob.objects.filter(pk=job_id, account=request.account).first()
    if job is None:
        raise Http404("no such job")
    return job


def job_json(job):
    folder = job.folder or "INBOX"
    return {
        "id": job.pk,
        "kind": job.kind,
        "label": job.label,
        "state": job.state,
        "state_text": _state_text(job),
        "percent": job.percent,
        "messages": job.messages,
        "already": job.already,
        "skipped": job.skipped,
        "bytes": job.bytes,
        "size": format_size(job.bytes),
        "error": job.error,
        "active": job.active,
        "folder": folder,
    }


def _state_text(job):
    counts = _("%(done)d imported, %(already)d already there") % {"done": job.messages, "already": job.already}
    if job.kind != TransferJob.Kind.IMPORT:
        counts = ngettext("%(done)d message", "%(done)d messages", job.messages) % {"done": job.messages}
    texts = {
        TransferJob.State.QUEUED: _("Waiting for a worker…"),
        TransferJob.State.RUNNING: {
            TransferJob.Kind.IMPORT: _("Importing: %(counts)s"),
            TransferJob.Kind.EXPORT: _("Exporting: %(counts)s"),
            TransferJob.Kind.MIGRATE: _("Copying from the other server: %(counts)s"),
        }[job.kind] % {"counts": counts},
        TransferJob.State.DONE: _("Done: %(counts)s") % {"counts": counts},
        TransferJob.State.FAILED: _("Failed: %(error)s") % {"error": job.error},
        TransferJob.State.CANCELLED: _("Cancelled after %(counts)s") % {"counts": counts},
    }
    return texts[job.state]


@never_cache
@page_csp
@require_GET
@account_required
def index(request):
    jobs = list(TransferJob.objects.filter(account=request.account).order_by("-created", "-pk")[:JOBS_SHOWN])
    for job in jobs:
        job.state_text = _state_text(job)
    return _page(request, "migration/transfer.html", {
        "title": _("Import and export"),
        "upload_form": UploadForm(account=request.account),
        "export_form": ExportForm(account=request.account),
        "jobs": jobs,
        "upload_limit": UPLOAD_LIMIT,
    })


def _wants_json(request):
    return "application/json" in request.headers.get("Accept", "")


@never_cache
@require_POST
@account_required
def upload(request):
    if int(request.META.get("CONTENT_LENGTH") or 0) > UPLOAD_LIMIT:
        error = _("The file is larger than %(limit)s.") % {"limit": format_size(UPLOAD_LIMIT)}
        return JsonResponse({"error": error}, status=413) if _wants_json(request) else HttpResponse(error, status=413)
    form = UploadForm(request.POST, request.FILES, account=request.account)
    job = None
    if form.is_valid():
        try:
            job = actions.save_upload(request.account, form.cleaned_data["file"], folder=form.cleaned_data["folder"])
        except (actions.TransferError, SourceError) as error:
            form.add_error(None, str(error))
    if job is None:
        if _wants_json(request):
            errors = [str(e) for field_errors in form.errors.values() for e in field_errors]
            return JsonResponse({"error": " ".join(errors)}, status=400)
        for field_errors in form.errors.values():
            for error in field_errors:
                notices.error(request, error)
        return redirect("migration:index")
    if _wants_json(request):
        return JsonResponse({"job": job_json(job), "status_url": reverse("migration:job", args=[job.pk])}, status=201)
    notices.success(request, _("%(name)s is being imported.") % {"name": job.label})
    return redirect("migration:index")


@never_cache
@require_GET
@account_required
def job_status(request, job_id):
    return JsonResponse(job_json(_job_of(request, job_id)))


@require_POST
@account_required
def job_cancel(request, job_id):
    actions.cancel_job(_job_of(request, job_id))
    return redirect("migration:index")


@require_POST
@account_required
def job_resume(request, job_id):
    try:
        actions.resume_job(_job_of(request, job_id))
    except actions.TransferError as error:
        notices.error(request, str(error))
    return redirect("migration:index")


@require_POST
@account_required
def job_discard(request, job_id):
    try:
        actions.discard_job(_job_of(request, job_id))
    except actions.TransferError as error:
        notices.error(request, str(error))
    return redirect("migration:index")


@never_cache
@require_GET
@account_required
def export(request):
    form = ExportForm(request.GET, account=request.account)
    if not form.is_valid():
        return HttpResponse(_("Pick a folder and a format."), status=400)
    folder, format = form.cleaned_data["folder"] or None, form.cleaned_data["format"]
    try:
        chunks = archive.zip_chunks(request.account, format=format, folder=folder)
    except actions.TransferError:
        raise Http404("no such folder") from None
    name = request.account.address + (f"-{folder.replace('/', '-')}" if folder else "") + f"-{format}.zip"
    if isinstance(request, ASGIRequest):
        # Under ASGI a plain iterator would be read whole into memory before the first
        # byte is sent (Django's StreamingHttpResponse does so): hand it over a chunk at a time.
        chunks = _one_at_a_time(chunks)
    response = StreamingHttpResponse(chunks, content_type="application/zip")
    response["Content-Disposition"] = content_disposition_header(True, name)
    response["Content-Security-Policy"] = DOWNLOAD_POLICY
    response["X-Content-Type-Options"] = "nosniff"
    return response


async def _one_at_a_time(chunks):
    """An async iterator over a sync one, each step in the request's thread (the ORM's)."""
    step = sync_to_async(next, thread_sensitive=True)
    while True:
        chunk = await step(chunks, None)
        if chunk is None:
            return
        yield chunk


# --- External accounts ------------------------------------------------------------------------


def _external_of(request, external_id):
    external = ExternalAccount.objects.filter(pk=external_id, account=request.account).first()
    if external is None:
        raise Http404("no such external account")
    return external


@never_cache
@page_csp
@require_http_methods(["GET", "POST"])
@account_required
def externals(request):
    form = ExternalAccountForm(request.POST or None, account=request.account)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with channel("webmail"):
                external = fetching.add_external_account(
                    request.account, acting_user=request.account, protocol=data["protocol"], host=data["host"].strip(),
                    port=data["port"], username=data["username"], password=data["password"], tls=data["tls"],
                    verify_certificate=data["verify_certificate"], remote_folders=data["remote_folders"].strip(),
                    local_folder=data["local_folder"], keep=data["keep"],
                )
        except fetching.ExternalAccountError as error:
            form.add_error(error.field if error.field in form.fields else None, str(error))
        else:
            notices.success(request, _("%(user)s on %(host)s added: new mail is fetched every few minutes.")
                            % {"user": external.username, "host": external.host})
            return redirect("migration:externals")
    accounts = list(ExternalAccount.objects.filter(account=request.account).order_by("pk"))
    return _page(request, "migration/externals.html", {
        "title": _("Mail from other accounts"),
        "externals": accounts,
        "form": form,
        "default_ports": {f"{p}-{t}": port for (p, t), port in DEFAULT_PORTS.items()},
    }, status=400 if request.method == "POST" else 200)


@never_cache
@page_csp
@require_http_methods(["GET", "POST"])
@account_required
def external_edit(request, external_id):
    external = _external_of(request, external_id)
    form = ExternalAccountEditForm(request.POST or None, account=request.account,
                                   initial={name: getattr(external, name) for name in fetching.EDITABLE})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            with channel("webmail"):
                fetching.update_external_account(external, acting_user=request.account, **{
                    **data, "host": data["host"].strip(), "remote_folders": data["remote_folders"].strip(),
                })
        except fetching.ExternalAccountError as error:
            form.add_error(error.field if error.field in form.fields else None, str(error))
        else:
            notices.success(request, _("%(user)s on %(host)s saved.") % {"user": external.username, "host": external.host})
            return redirect("migration:externals")
    return _page(request, "migration/external_edit.html", {
        "title": _("Mail from other accounts"),
        "external": external,
        "form": form,
    }, status=400 if request.method == "POST" else 200)


@require_POST
@account_required
def external_test(request, external_id):
    external = _external_of(request, external_id)
    try:
        notices.success(request, f"{external.username}@{external.host}: {fetching.test_connection(external)}")
    except (RemoteError, ValueError) as error:
        notices.error(request, f"{external.username}@{external.host}: {error}")
    return redirect("migration:externals")


@require_POST
@account_required
def external_fetch(request, external_id):
    external = _external_of(request, external_id)
    count = fetching.fetch_external(external)
    if external.last_error:
        notices.error(request, f"{external.username}@{external.host}: {external.last_error}")
    else:
        notices.success(request, ngettext("%(count)d new message fetched.", "%(count)d new messages fetched.", count)
                        % {"count": count})
    return redirect("migration:externals")


@require_POST
@account_required
def external_remove(request, external_id):
    external = _external_of(request, external_id)
    with channel("webmail"):
        fetching.remove_external_account(external, acting_user=request.account)
    notices.success(request, _("External account removed."))
    return redirect("migration:externals")

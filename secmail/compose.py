"""The webmail's compose page through secmail: the sign/encrypt choice and its readiness.

protector(request, draft) gives webmail.compose.send a function that signs and/or encrypts
the built message (secmail.outgoing.protect), or None when there is nothing to do. The
choice is made in the form's secmail_sign / secmail_encrypt / secmail_kind fields; signing
needs a key of that kind unlocked in this session (secmail.unlock), encrypting needs a key
for every recipient (refused before anything is sent: errors.NoKeyFor).
"""
import email.utils

from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from secmail import discovery, models, outgoing, session
from secmail.errors import Locked
from webmail.auth import account_required

MAX_READINESS_ADDRESSES = 100


def _addresses(*fields):
    return [a.lower() for _n, a in email.utils.getaddresses([f for f in fields if f]) if "@" in a]


def protector(request, draft):
    account = request.account
    sign = request.POST.get("secmail_sign") == "1"
    encrypt = request.POST.get("secmail_encrypt") == "1"
    kind = models.SMIME if request.POST.get("secmail_kind") == models.SMIME else models.OPENPGP
    publishes = models.OwnKey.objects.filter(account=account, kind=models.OPENPGP, published=True).exists()
    if not (sign or encrypt or publishes):
        return None
    unlocked = None
    if sign:
        unlocked = next((u for u in session.unlocked_keys(request, account)
                         if u.own_key.kind == kind and not u.own_key.pending and draft.from_address.lower() in u.own_key.addresses), None)
        if unlocked is None:
            raise Locked(_("To sign, unlock your key for %(address)s first (Settings, Signing and encryption).")
                         % {"address": draft.from_address})
    recipients = _addresses(draft.to, draft.cc, draft.bcc)
    if encrypt:
        outgoing.recipient_keys(account, recipients, kind)  # warm; the real check is in protect
        missing = [a for a, ready in outgoing.readiness(account, recipients, kind).items() if not ready]
        if missing:
            from secmail.errors import NoKeyFor

            raise NoKeyFor(missing)

    def protect(raw):
        return outgoing.protect(account, raw, kind=kind, sign=sign, encrypt=encrypt, recipients=recipients, unlocked=unlocked)

    return protect


@require_GET
@account_required
def readiness(request):
    """{"kind", "recipients": {address: can receive encrypted}, "all": bool, "can_sign": bool,
    "alternative": the other kind if it reaches every recipient and this one does not, else ""}.

    With lookup=1 (the page sends it while encryption is on), OpenPGP recipients without a
    key are first looked up by WKD (secmail.discovery: bounded, misses remembered)."""
    kind = models.SMIME if request.GET.get("kind") == models.SMIME else models.OPENPGP
    recipients = _addresses(request.GET.get("to", ""), request.GET.get("cc", ""), request.GET.get("bcc", ""))[:MAX_READINESS_ADDRESSES]
    ready = outgoing.readiness(request.account, recipients, kind)
    if kind == models.OPENPGP and request.GET.get("lookup") == "1":
        for address in discovery.find_keys(request.account, [a for a, ok in ready.items() if not ok]):
            ready[address] = True
    unlocked = [u for u in session.unlocked_keys(request, request.account) if u.own_key.kind == kind and not u.own_key.pending]
    every = bool(ready) and all(ready.values())
    # The other kind, when it would reach every recipient and this one does not (a contact
    # whose S/MIME certificate was harvested from signed mail): the page switches to it.
    other = models.SMIME if kind == models.OPENPGP else models.OPENPGP
    alternative = other if ready and not every and all(outgoing.readiness(request.account, list(ready), other).values()) else ""
    return JsonResponse({"kind": kind, "recipients": ready, "all": every, "can_sign": bool(unlocked), "alternative": alternative})

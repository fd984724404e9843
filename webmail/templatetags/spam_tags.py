"""{% spam_panel message %}: a message's authentication results and spam verdict in plain words."""
from django import template
from django.utils.translation import gettext_lazy as _

from antispam.models import Verdict

register = template.Library()

# Authentication results in plain words, by method and result.
MEANINGS = {
    ("spf", "pass"): _("the sending server is allowed to send for the sender's domain"),
    ("spf", "fail"): _("the sending server is not allowed to send for the sender's domain"),
    ("spf", "softfail"): _("the sender's domain says this server is probably not allowed to send for it"),
    ("dkim", "pass"): _("the message carries a valid signature: it was not changed on the way"),
    ("dkim", "fail"): _("the message's signature does not verify: it may have been changed"),
    ("dmarc", "pass"): _("the sender's domain vouches for this message"),
    ("dmarc", "fail"): _("the sender's domain failed DMARC: it does not vouch for this message"),
    ("arc", "pass"): _("a forwarder recorded how the message arrived to it"),
}
ACTIONS = {
    "none": _("not spam"),
    "tag": _("marked as possible spam"),
    "junk": _("spam: filed into Junk"),
    "reject": _("certainly spam (kept in Junk because another recipient accepted it)"),
}


@register.inclusion_tag("webmail/spam/_verdict.html")
def spam_panel(message):
    verdict = Verdict.objects.filter(account_id=message.folder.account_id, blob_id=message.blob_id).first()
    if verdict is None:
        return {"verdict": None}
    results = []
    for method in ("spf", "dkim", "dmarc", "arc"):
        value = verdict.results.get(method)
        for result in (value if isinstance(value, list) else [value] if value else []):
            results.append((method.upper(), result, MEANINGS.get((method, result), "")))
    reasons = sorted(verdict.rules, key=lambda rule: -abs(rule[1]))
    return {"verdict": verdict, "results": results, "reasons": reasons, "action": ACTIONS.get(verdict.action, verdict.action)}

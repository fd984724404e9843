"""Template tags of secmail for other apps' pages."""
from django import template

from secmail import addressbook

register = template.Library()


@register.simple_tag(takes_context=True)
def secmail_key_kinds(context, contacts):
    """Mark each contact of the page with the kinds of key known for its address
    (contact.secmail_kinds), in one query. The list is evaluated here; a queryset keeps
    the same instances for the page's own loop over it."""
    request = context.get("request")
    account = getattr(request, "account", None)
    if account is not None:
        addressbook.annotate(account, contacts)
    return ""

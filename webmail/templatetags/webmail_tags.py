from django import template
from django.utils import formats, timezone
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def mail_date(value):
    """Short date for the list: the time today, day and month this year, else the full date."""
    if value is None:
        return ""
    local = timezone.localtime(value)
    today = timezone.localdate()
    if local.date() == today:
        return formats.time_format(local, "TIME_FORMAT")
    if local.year == today.year:
        return formats.date_format(local, "MONTH_DAY_FORMAT")
    return formats.date_format(local, "SHORT_DATE_FORMAT")


@register.filter
def full_date(value):
    if value is None:
        return ""
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


@register.filter
def delay(seconds):
    """A hop's delay for the trace: "3 s", "2 min", "1 h"."""
    if seconds is None:
        return ""
    if seconds < 0:
        return _("clock skew")
    if seconds < 120:
        return _("%(n)d s") % {"n": seconds}
    if seconds < 7200:
        return _("%(n)d min") % {"n": seconds // 60}
    return _("%(n)d h") % {"n": seconds // 3600}


@register.filter
def sender_name(display):
    """The name of "Name <address>", or the address."""
    name, _, rest = (display or "").partition(" <")
    return name.strip('"') if rest else display


@register.filter
def linkify(text):
    from webmail.message import linkify as make_links

    return make_links(text)

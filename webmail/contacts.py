"""The address book: vCard (RFC 6350) reading and writing, and autocomplete suggestions.
Writes go through webmail.actions."""
from django.db.models import Q

from webmail.models import Contact

MAX_VCARD_BYTES = 2 * 1024 * 1024


def _escape(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace(",", "\\,").replace(";", "\\;")


def _unescape(value):
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt in "nN" else nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def to_vcards(contacts):
    """vCard 4.0 text for the contacts, CRLF line ends (RFC 6350 §3.2)."""
    lines = []
    for contact in contacts:
        lines += ["BEGIN:VCARD", "VERSION:4.0", f"FN:{_escape(contact.name or contact.address)}", f"EMAIL:{_escape(contact.address)}", "END:VCARD"]
    return "".join(line + "\r\n" for line in lines)


def parse_vcards(text):
    """[(name, [addresses])] from vCard 3.0/4.0 text; cards without EMAIL are skipped.
    Lines are unfolded (RFC 6350 §3.2); property parameters and groups are ignored."""
    unfolded = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += line[1:]
        else:
            unfolded.append(line)
    cards, name, addresses, inside = [], "", [], False
    for line in unfolded:
        prop, colon, value = line.partition(":")
        if not colon:
            continue
        prop_name = prop.split(";", 1)[0].rpartition(".")[2].upper()
        if prop_name == "BEGIN" and value.strip().upper() == "VCARD":
            name, addresses, inside = "", [], True
        elif prop_name == "END" and value.strip().upper() == "VCARD" and inside:
            if addresses:
                cards.append((name, addresses))
            inside = False
        elif inside and prop_name == "FN":
            name = _unescape(value.strip())
        elif inside and prop_name == "EMAIL":
            address = _unescape(value.strip())
            if address.lower().startswith("mailto:"):
                address = address[7:]
            if "@" in address:
                addresses.append(address)
    return cards


def suggestions(account, prefix, limit=10):
    """Contacts whose address, name or a word of the name starts with `prefix` (any case)."""
    prefix = prefix.strip()
    if not prefix:
        return []
    return list(
        Contact.objects.filter(account=account)
        .filter(Q(key__startswith=prefix.lower()) | Q(name__istartswith=prefix) | Q(name__icontains=" " + prefix))[:limit]
    )

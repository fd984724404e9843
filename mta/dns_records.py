"""The DNS records a domain served here needs, for its operator to publish.

records_for() lists them as Record(name, type, value, comment). Names are absolute (with the
root dot) and in ASCII (an IDN domain in its xn-- form). The value is the RDATA in zone-file
syntax: TXT text is quoted and cut into character-strings of at most 255 bytes (RFC 1035
§3.3.14; an RSA 2048 DKIM key needs two), which a zone file or nsupdate joins back into one
text; Record.text is that one text, for DNS web panels that ask for it.

What is published, and why:
- MX 10 HOSTNAME: the domain's mail comes to this server.
- SPF (RFC 7208) `v=spf1 mx a:HOSTNAME -all`: the hosts that receive the domain's mail may
  send it, and so may this server by name (which keeps working if the MX later points at a
  filtering service in front of it); nothing else may (-all: with every message DKIM-signed
  there is no forwarding case left that a softfail would rescue).
- DKIM (RFC 6376 §3.6.1, RFC 8463 §4.2): one TXT at SELECTOR._domainkey.DOMAIN per key that
  is published (so it is in DNS before it signs), active, or retired (so mail it signed
  still verifies while in flight); `k=rsa` or `k=ed25519`.
- DMARC (RFC 7489) `v=DMARC1; p=quarantine; rua=mailto:postmaster@DOMAIN`: mail from here is
  DKIM-signed and comes from an SPF-authorised host, so mail failing both is not ours. It
  is quarantined rather than rejected, because a mailing list that rewrites a message
  breaks the signature and its mail should land in spam, not bounce. Aggregate reports go
  to postmaster, an address RFC 5321 §4.5.1 requires to exist anyway.
"""
import re
from typing import NamedTuple

from accounts.errors import InvalidInput
from mailsuite.lib.addresses import AddressError, normalize_domain
from mta import dkim
from mta.models import DKIMKey

TTL = 3600
TXT_STRING_MAX = 255  # bytes in one DNS character-string
MX_PREFERENCE = 10
DMARC_POLICY = "quarantine"

_STATE_ORDER = {DKIMKey.State.ACTIVE: 0, DKIMKey.State.PUBLISHED: 1, DKIMKey.State.RETIRED: 2}
_KEY_TYPE = {DKIMKey.Algorithm.RSA_SHA256: "rsa", DKIMKey.Algorithm.ED25519_SHA256: "ed25519"}
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Record(NamedTuple):
    name: str  # absolute, ASCII, e.g. "example.org."
    type: str  # "MX", "TXT"
    value: str  # RDATA in zone-file syntax
    comment: str  # for people: why it is there, what to do with it

    @property
    def text(self):
        """A TXT record's text as one string (its character-strings joined); else the value."""
        if self.type != "TXT":
            return self.value
        return "".join(re.sub(r"\\(.)", r"\1", part) for part in _QUOTED.findall(self.value))

    def zone_line(self, *, ttl=TTL, comment=True):
        """One line of a zone file: `NAME TTL IN TYPE VALUE ; comment`."""
        line = f"{self.name} {ttl} IN {self.type} {self.value}"
        return f"{line} ; {self.comment}" if comment and self.comment else line


def txt_value(text):
    """`text` as TXT RDATA: quoted character-strings of at most 255 bytes each."""
    data = text.encode("utf-8")
    chunks = [data[start : start + TXT_STRING_MAX] for start in range(0, len(data), TXT_STRING_MAX)] or [b""]
    return " ".join(
        '"' + chunk.decode("utf-8").replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks
    )


def dkim_text(key):
    """The text of a key's DKIM record."""
    return f"v=DKIM1; k={_KEY_TYPE[key.algorithm]}; p={key.public_key}"


def dkim_record(key, domain_name):
    when = {
        DKIMKey.State.ACTIVE: "signs now",
        DKIMKey.State.PUBLISHED: "not signing yet: publish it, then activate it",
        DKIMKey.State.RETIRED: "retired"
        + (f" on {key.retired:%Y-%m-%d}" if key.retired else "")
        + ": take it out of DNS a few days after that",
    }[key.state]
    return Record(
        f"{key.selector}._domainkey.{domain_name}.",
        "TXT",
        txt_value(dkim_text(key)),
        f"DKIM {key.algorithm} key {key.selector}, {when}",
    )


def _host(hostname):
    try:
        return normalize_domain(hostname)
    except AddressError as error:
        raise InvalidInput(
            f"the server name {hostname!r} cannot go in DNS ({error}); set MAILSUITE_HOSTNAME to its public name"
        ) from None


def records_for(domain, *, hostname, relayhost=""):
    """[Record] to publish for `domain` (a Domain): MX, SPF, DKIM per key, DMARC.

    `hostname` is this server's public name (MAILSUITE_HOSTNAME); InvalidInput if it is not
    one (say "localhost"). `relayhost` (MAILSUITE_RELAYHOST), when mail leaves through one,
    is named in the SPF record's comment: its provider says what to add.
    """
    host = _host(hostname)
    name = domain.name
    spf_comment = "who may send mail from the domain"
    if relayhost:
        spf_comment += f"; mail leaves through {relayhost}: add what its provider says (e.g. include:…) before -all"
    records = [
        Record(f"{name}.", "MX", f"{MX_PREFERENCE} {host}.", "mail for the domain comes to this server"),
        Record(f"{name}.", "TXT", txt_value(f"v=spf1 mx a:{host} -all"), spf_comment),
    ]
    keys = sorted(dkim.keys_of(domain), key=lambda key: (_STATE_ORDER[key.state], key.selector))
    records += [dkim_record(key, name) for key in keys]
    records.append(
        Record(
            f"_dmarc.{name}.",
            "TXT",
            txt_value(f"v=DMARC1; p={DMARC_POLICY}; rua=mailto:postmaster@{name}"),
            "DMARC: what receivers do with mail failing DKIM and SPF; reports go to postmaster",
        )
    )
    return records

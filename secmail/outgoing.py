"""Sending: sign and/or encrypt a composed message, and say beforehand who can get it encrypted.

- The entity (Content-* fields and body) is signed/encrypted; From/To/Subject/Date stay
  outside, as RFC 8551 §3.1 and RFC 3156 do. When encrypting, the header fields are also
  copied into the entity, marked protected-headers="v1", and the outer Subject becomes
  "..." (protected headers as Thunderbird, Autocrypt and draft-ietf-lamps-header-protection
  do): the real subject travels encrypted; secmail.reader shows the inner one.
- Before signing, bodies are made 7-bit safe (quoted-printable / base64): a relay that
  re-encodes 8-bit text would otherwise break the signature (RFC 8551 §3.1.3, RFC 3156 §3).
- Sign+encrypt: S/MIME signs then encrypts (RFC 8551 §3.6); PGP/MIME uses the combined form.
- The sender is always among the recipients of the encryption, so the Sent copy opens.
- Recipients' keys: the address book (PeerKey), else a published key of a local account.
- With a published OpenPGP key for the From address, an Autocrypt header goes out with the
  message (Autocrypt Level 1 §2.1), signed or not.
"""
import email.encoders
import email.generator
import email.parser
import email.policy
import email.utils
import io

from django.utils.translation import gettext

from secmail import autocrypt, mimeraw, models, openpgp, pgpmime, smime
from secmail.errors import InvalidInput, Locked, NoKeyFor

_SEVEN_BIT = email.policy.SMTP.clone(cte_type="7bit", max_line_length=78)


def seven_bit(entity: bytes) -> bytes:
    """The entity with every 8-bit body re-encoded (quoted-printable or base64), CRLF lines."""
    entity = mimeraw.canonical(entity)
    if all(b < 128 for b in entity) and all(len(line) <= 998 for line in entity.split(b"\r\n")):
        return entity
    parsed = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(entity)
    for part in parsed.walk():
        if part.is_multipart():
            continue
        if str(part.get("Content-Transfer-Encoding", "7bit")).lower() in ("8bit", "binary", "7bit"):
            payload = part.get_payload(decode=True) or b""
            if part.get_content_maintype() == "text":
                charset = part.get_content_charset() or "utf-8"
                text = payload.decode(charset, "replace")
                del part["Content-Transfer-Encoding"]
                part.set_payload(text, charset)  # the charset's body encoding: QP or base64
                if part["Content-Transfer-Encoding"] is None:
                    email.encoders.encode_quopri(part)
            else:
                del part["Content-Transfer-Encoding"]
                part.set_payload(payload)
                email.encoders.encode_base64(part)
    out = io.BytesIO()
    email.generator.BytesGenerator(out, policy=_SEVEN_BIT).flatten(parsed)
    return mimeraw.canonical(out.getvalue())



def _local_published(address, kind):
    return [k for k in models.OwnKey.objects.filter(kind=kind, published=True).exclude(public_data="")
            if address in k.addresses]


def recipient_keys(account, addresses, kind):
    """{address: public key data or None} — the newest usable key for each address."""
    found = {}
    for address in addresses:
        address = address.lower()
        peers = models.PeerKey.objects.filter(account=account, kind=kind, address=address).order_by("-seen_at", "-created")
        key = next((p.public_data for p in peers if not _expired(p.not_after)), None)
        if key is None:  # the sender's own address (Bcc to oneself)
            key = next((k.public_data for k in models.OwnKey.objects.filter(account=account, kind=kind).exclude(public_data="")
                        if address in k.addresses and not _expired(k.not_after)), None)
        if key is None:
            key = next((k.public_data for k in _local_published(address, kind) if not _expired(k.not_after)), None)
        found[address] = key
    return found


def _expired(not_after):
    from django.utils import timezone

    return not_after is not None and not_after < timezone.now()


def readiness(account, addresses, kind):
    """{address: True/False}: can each recipient receive encrypted mail of this kind?"""
    return {a: k is not None for a, k in recipient_keys(account, addresses, kind).items()}


def protect(account, message: bytes, *, kind, sign, encrypt, recipients, unlocked=None, own_public=None):
    """The message signed and/or encrypted. `unlocked` (secmail.keys.UnlockedKey) is needed
    to sign; `own_public` is the sender's own key data for encrypt-to-self (defaults to
    the unlocked key's)."""
    outer, entity = mimeraw.split_message(message)
    if not sign and not encrypt:
        return _with_autocrypt(account, outer, message)
    if sign and unlocked is None:
        raise Locked(gettext("unlock your key to sign"))
    if sign and unlocked.own_key.kind != kind:
        raise InvalidInput("the key to sign with is of another kind")
    entity = seven_bit(entity)
    if encrypt:
        entity = protected_headers(outer, entity)
        outer = [OBSCURED_SUBJECT if mimeraw.field_name(f) == "subject" else f for f in outer]
    if kind == models.SMIME:
        if sign:
            if unlocked.smime_cert is None:
                raise InvalidInput("the key has no certificate yet")
            entity = smime.sign_entity(entity, unlocked.smime_cert, unlocked.smime_key, unlocked.smime_chain)
        if encrypt:
            certs = [smime.load_certificate(data) for data in _encryption_keys(account, recipients, kind, unlocked, own_public)]
            entity = smime.encrypt_entity(entity, certs)
    else:
        secret = unlocked.openpgp_secret if sign else None
        if encrypt:
            entity = pgpmime.encrypt_entity(entity, _encryption_keys(account, recipients, kind, unlocked, own_public), sign_with=secret)
        else:
            entity = pgpmime.sign_entity(entity, secret)
    return _with_autocrypt(account, outer, mimeraw.join_message(outer, entity))


# Copied into the encrypted entity (never Bcc: the other recipients must not learn it).
PROTECTED_FIELDS = {"date", "from", "sender", "reply-to", "to", "cc", "subject", "message-id", "in-reply-to", "references"}
OBSCURED_SUBJECT = b"Subject: ...\r\n"


def protected_headers(outer, entity: bytes) -> bytes:
    """The entity with copies of the outer header fields and protected-headers="v1" on its
    Content-Type (draft-autocrypt-lamps-protected-headers §2.1)."""
    head, body = mimeraw.split_header_body(entity)
    fields = mimeraw.header_fields(head)
    for i, field in enumerate(fields):
        if mimeraw.field_name(field) == "content-type":
            fields[i] = field.rstrip(b"\r\n") + b';\r\n protected-headers="v1"\r\n'
            break
    copies = [f for f in outer if mimeraw.field_name(f) in PROTECTED_FIELDS]
    return b"".join(fields + copies) + b"\r\n" + body


def _encryption_keys(account, recipients, kind, unlocked, own_public):
    keys = recipient_keys(account, recipients, kind)
    missing = [a for a, k in keys.items() if k is None]
    if missing:
        raise NoKeyFor(missing)
    own = own_public or (unlocked.own_key.public_data if unlocked else None)
    if own is None:
        mine = models.OwnKey.objects.filter(account=account, kind=kind).exclude(public_data="").first()
        own = mine.public_data if mine else None
    return list(keys.values()) + ([own] if own else [])


def _with_autocrypt(account, outer, message):
    """Add our Autocrypt header when the From address has a published OpenPGP key."""
    headers = mimeraw.parse_headers(b"".join(outer))
    from_address = email.utils.parseaddr(str(headers.get("From", "")))[1].lower()
    if headers.get("Autocrypt") is not None:
        return message
    key = models.OwnKey.objects.filter(account=account, kind=models.OPENPGP, published=True).first()
    if key is None or from_address not in key.addresses:
        return message
    try:
        keydata = openpgp.minimal_key(key.public_data, from_address)
    except InvalidInput:
        return message
    field = b"Autocrypt: " + autocrypt.header_value(from_address, keydata).encode("ascii") + b"\r\n"
    return field + mimeraw.canonical(message)


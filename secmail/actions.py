"""The one write path for secmail: own keys, correspondents' keys, trusted CAs.

Rules kept here:
- A private key is accepted only while MAILSUITE_SERVER_PRIVATE_KEYS is on, and only
  sealed with the user's key passphrase (secmail.sealing); it is never returned by any
  function here except unseal_private() to its owner's session.
- An own key must be for an address the account may send as (accounts.identities).
- Correspondents' keys are learned only from signatures that verified (harvest), from an
  Autocrypt header whose addr is the From address (Autocrypt Level 1 §2.3), from WKD for
  the address asked, or imported by the user.
"""
import hashlib

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext

from accounts.identities import may_send_as
from secmail import keys, openpgp, sealing, smime
from secmail.errors import Conflict, InvalidInput, NotFound, PrivateKeysDisabled
from secmail.models import OPENPGP, SMIME, OwnKey, PeerKey, RevocationList, TrustedCA


def _require_private_keys():
    if not settings.MAILSUITE_SERVER_PRIVATE_KEYS:
        raise PrivateKeysDisabled(gettext("this server keeps no private keys; use a mail client that holds your key"))


def _own_addresses(account, addresses):
    mine = [a for a in addresses if may_send_as(account, a)]
    if not mine:
        raise InvalidInput(f"the key is for {', '.join(addresses) or 'no address'}, not an address you send from")
    return addresses


def _create_own(account, **fields):
    try:
        with transaction.atomic():
            return OwnKey.objects.create(account=account, **fields)
    except IntegrityError:
        raise Conflict("this key is already in your keys") from None


def _seal(own_key, material, passphrase):
    own_key.sealed_private = sealing.seal(material, passphrase, own_key.context())


# ---- own keys ---------------------------------------------------------------------------

def import_pkcs12(account, data: bytes, *, password: str, passphrase: str) -> OwnKey:
    """An S/MIME certificate with its private key from a PKCS#12 file."""
    _require_private_keys()
    sealing.check_passphrase(passphrase)
    key, cert, chain = smime.load_pkcs12(data, password)
    own = OwnKey(
        kind=SMIME, fingerprint=smime.fingerprint(cert), label=smime.certificate_label(cert),
        addresses=_own_addresses(account, smime.certificate_addresses(cert)),
        public_data=smime.certificate_pem(cert), not_after=cert.not_valid_after_utc,
    )
    _seal(own, keys.material_smime(key, chain), passphrase)
    return _create_own(account, **_fields(own))


def _fields(own):
    return {f: getattr(own, f) for f in ("kind", "fingerprint", "label", "addresses", "public_data", "csr_pem",
                                         "sealed_private", "not_after", "published")}


def request_smime_certificate(account, *, passphrase: str, name: str = "") -> OwnKey:
    """A new key and a certificate signing request for the account's address; the key waits
    (pending) until install_certificate() is given the certificate the CA made from it."""
    _require_private_keys()
    sealing.check_passphrase(passphrase)
    key, csr_pem = smime.generate_key_and_csr(account.address, name or account.display_name)
    spki = smime.x509.load_pem_x509_csr(csr_pem.encode()).public_key().public_bytes(
        smime.serialization.Encoding.DER, smime.serialization.PublicFormat.SubjectPublicKeyInfo)
    own = OwnKey(kind=SMIME, fingerprint="csr-" + hashlib.sha256(spki).hexdigest()[:60], label=name or account.address,
                 addresses=[account.address], csr_pem=csr_pem)
    _seal(own, keys.material_smime(key, []), passphrase)
    return _create_own(account, **_fields(own))


@transaction.atomic
def install_certificate(own_key: OwnKey, data, chain=()) -> OwnKey:
    """The CA's certificate for a pending request: it must carry the request's public key."""
    own_key = OwnKey.objects.select_for_update().get(pk=own_key.pk)
    if not own_key.pending:
        raise Conflict("this key already has its certificate")
    cert = smime.load_certificate(data)
    csr = smime.x509.load_pem_x509_csr(own_key.csr_pem.encode())
    fmt = (smime.serialization.Encoding.DER, smime.serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != csr.public_key().public_bytes(*fmt):
        raise InvalidInput("this certificate is not for the key of the request")
    addresses = _own_addresses(own_key.account, smime.certificate_addresses(cert))
    # The sealed blob is bound to the fingerprint (sealing context); the chain is kept in
    # public_data after the certificate, so the blob need not be re-sealed (no passphrase here).
    own_key.public_data = smime.certificate_pem(cert) + "".join(smime.certificate_pem(smime.load_certificate(c)) for c in chain)
    own_key.addresses, own_key.label, own_key.not_after = addresses, smime.certificate_label(cert), cert.not_valid_after_utc
    own_key.save(update_fields=["public_data", "addresses", "label", "not_after"])
    return own_key


def generate_openpgp_key(account, *, passphrase: str, name: str = "") -> OwnKey:
    _require_private_keys()
    sealing.check_passphrase(passphrase)
    info, public, secret = openpgp.generate(name or account.display_name, account.address)
    return _own_openpgp(account, info, public, secret, passphrase)


def import_openpgp_secret_key(account, armored: str, *, key_passphrase: str, passphrase: str) -> OwnKey:
    """A secret key exported from another program; `key_passphrase` is the one it was exported with."""
    _require_private_keys()
    sealing.check_passphrase(passphrase)
    info, public, secret = openpgp.import_secret(armored, key_passphrase)
    return _own_openpgp(account, info, public, secret, passphrase)


def _own_openpgp(account, info, public, secret, passphrase):
    own = OwnKey(kind=OPENPGP, fingerprint=info.fingerprint, label=info.label,
                 addresses=_own_addresses(account, info.addresses), public_data=public, not_after=info.expires)
    _seal(own, keys.material_openpgp(secret), passphrase)
    return _create_own(account, **_fields(own))


def add_own_public_key(account, data) -> OwnKey:
    """The public half only (the secret stays in the user's mail client): published by WKD and
    Autocrypt, and used to encrypt the Sent copy. Allowed with server private keys off."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "BEGIN CERTIFICATE" in text:
        cert = smime.load_certificate(text)
        own = OwnKey(kind=SMIME, fingerprint=smime.fingerprint(cert), label=smime.certificate_label(cert),
                     addresses=_own_addresses(account, smime.certificate_addresses(cert)),
                     public_data=smime.certificate_pem(cert), not_after=cert.not_valid_after_utc)
    else:
        infos = openpgp.inspect(data)
        info = infos[0]
        own = OwnKey(kind=OPENPGP, fingerprint=info.fingerprint, label=info.label,
                     addresses=_own_addresses(account, info.addresses),
                     public_data=openpgp.armor_public(openpgp.minimal_key(data if isinstance(data, bytes) else data.encode())),
                     not_after=info.expires)
    return _create_own(account, **_fields(own))


def get_own_key(account, key_id) -> OwnKey:
    try:
        return OwnKey.objects.get(account=account, pk=key_id)
    except (OwnKey.DoesNotExist, ValueError, TypeError):
        raise NotFound("no such key") from None


def delete_own_key(account, key_id):
    get_own_key(account, key_id).delete()


def set_published(own_key: OwnKey, published: bool):
    """Publish by WKD and in Autocrypt headers: at most one published key per kind and address."""
    with transaction.atomic():
        if published:
            if own_key.pending:
                raise InvalidInput("a key waiting for its certificate cannot be published")
            OwnKey.objects.filter(account=own_key.account, kind=own_key.kind, published=True).exclude(pk=own_key.pk).update(published=False)
        OwnKey.objects.filter(pk=own_key.pk).update(published=published)
    own_key.published = published


def unseal_private(own_key: OwnKey, passphrase: str) -> keys.UnlockedKey:
    """The owner's key opened with its passphrase (BadPassphrase if wrong)."""
    if own_key.sealed_private is None:
        raise NotFound("the server holds no private key for this key")
    return keys.open_material(own_key, sealing.unseal(own_key.sealed_private, passphrase, own_key.context()))


def change_passphrase(own_key: OwnKey, old: str, new: str):
    sealing.check_passphrase(new)
    material = sealing.unseal(own_key.sealed_private, old, own_key.context())
    _seal(own_key, material, new)
    own_key.save(update_fields=["sealed_private"])


# ---- correspondents' keys ---------------------------------------------------------------

def _upsert_peer(account, *, kind, address, fingerprint, label, public_data, source, not_after=None, seen_at=None, prefer_encrypt=False):
    address = address.lower()
    with transaction.atomic():
        peer, created = PeerKey.objects.select_for_update().get_or_create(
            account=account, kind=kind, address=address, fingerprint=fingerprint,
            defaults=dict(label=label, public_data=public_data, source=source, not_after=not_after,
                          seen_at=seen_at, prefer_encrypt=prefer_encrypt),
        )
        if not created and seen_at and (peer.seen_at is None or seen_at > peer.seen_at):
            peer.seen_at, peer.prefer_encrypt = seen_at, prefer_encrypt
            if source == PeerKey.AUTOCRYPT or peer.source == PeerKey.AUTOCRYPT:
                peer.public_data = public_data  # a refreshed key (new subkeys or expiry)
            peer.save(update_fields=["seen_at", "prefer_encrypt", "public_data"])
        return peer


def import_peer_key(account, data, *, source=PeerKey.IMPORTED) -> list:
    """A correspondent's certificate (PEM/DER) or OpenPGP public key block: one row per address."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"BEGIN CERTIFICATE" in raw or raw[:1] == b"\x30":
        cert = smime.load_certificate(raw)
        addresses = smime.certificate_addresses(cert)
        if not addresses:
            raise InvalidInput("the certificate names no mail address")
        return [_upsert_peer(account, kind=SMIME, address=a, fingerprint=smime.fingerprint(cert), label=smime.certificate_label(cert),
                             public_data=smime.certificate_pem(cert), source=source, not_after=cert.not_valid_after_utc)
                for a in addresses]
    if b"PRIVATE KEY" in raw:
        raise InvalidInput("that is a secret key: import it under your own keys, never as a contact's")
    learned = []
    for info in openpgp.inspect(raw):
        if not info.addresses:
            continue
        public = openpgp.armor_public(openpgp.minimal_key(raw))
        for address in info.addresses:
            learned.append(_upsert_peer(account, kind=OPENPGP, address=address, fingerprint=info.fingerprint, label=info.label,
                                        public_data=public, source=source, not_after=info.expires))
    if not learned:
        raise InvalidInput("the key names no mail address")
    return learned


def harvest(account, security, from_address, seen_at=None):
    """Keep the S/MIME certificate of a signature that verified for the From address
    (RFC 8551 §2.5.2 suggests saving the sender's certificate for replies), and the sender
    in the address book (a collected contact, never changing one the user typed), where
    the contacts page shows that a certificate is known (secmail.addressbook)."""
    from webmail.actions import record_correspondents

    learned = []
    for signature in security.signatures:
        if signature.scheme == SMIME and signature.valid and signature.certificate_pem:
            cert = smime.load_certificate(signature.certificate_pem)
            learned.append(_upsert_peer(account, kind=SMIME, address=from_address, fingerprint=signature.fingerprint,
                                        label=signature.signer_name, public_data=signature.certificate_pem,
                                        source=PeerKey.HARVESTED, not_after=cert.not_valid_after_utc,
                                        seen_at=seen_at or timezone.now()))
    if learned:
        name = learned[0].label if learned[0].label.lower() != from_address.lower() else ""
        record_correspondents(account, [(name, from_address)])
    return learned


def delete_peer_key(account, key_id):
    deleted, _ = PeerKey.objects.filter(account=account, pk=key_id).delete()
    if not deleted:
        raise NotFound("no such key")


# ---- trusted CAs ------------------------------------------------------------------------

def trust_ca(account, data) -> TrustedCA:
    cert = smime.load_certificate(data)
    try:
        constraints = cert.extensions.get_extension_for_class(smime.x509.BasicConstraints).value
    except smime.x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidInput("that is not a CA certificate")
    try:
        with transaction.atomic():
            return TrustedCA.objects.create(account=account, fingerprint=smime.fingerprint(cert),
                                            subject=cert.subject.rfc4514_string()[:500], pem=smime.certificate_pem(cert))
    except IntegrityError:
        raise Conflict("this CA is already trusted") from None


def distrust_ca(account, ca_id):
    deleted, _ = TrustedCA.objects.filter(account=account, pk=ca_id).delete()
    if not deleted:
        raise NotFound("no such CA")


# ---- certificate revocation lists ------------------------------------------------------

MAX_CRL_BYTES = 10 * 1024 * 1024


def import_crl(account, data) -> RevocationList:
    """A CRL (PEM or DER) for the account's reading, or for everyone's with account None
    (the operator's). It replaces an older CRL of the same issuer; an older one than what is
    kept is refused. Its signature is checked when used (secmail.revocation)."""
    from secmail import revocation

    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_CRL_BYTES:
        raise InvalidInput("the CRL is larger than 10 MB")
    try:
        crl = revocation.load_crl(raw)
        der = crl.public_bytes(smime.serialization.Encoding.DER)
        entries = sum(1 for _ in crl)
    except ValueError:
        raise InvalidInput("not a certificate revocation list (PEM or DER)") from None
    issuer_key = revocation.name_key(crl.issuer)
    with transaction.atomic():
        kept = RevocationList.objects.select_for_update().filter(account=account, issuer_key=issuer_key).first()
        if kept is not None and kept.this_update > crl.last_update_utc:
            raise Conflict(f"a newer CRL of {kept.issuer} is already imported (of {kept.this_update:%Y-%m-%d %H:%M})")
        fields = dict(issuer=crl.issuer.rfc4514_string()[:500], der=der, this_update=crl.last_update_utc,
                      next_update=crl.next_update_utc, entries=entries)
        if kept is not None:
            for name, value in fields.items():
                setattr(kept, name, value)
            kept.save()
            return kept
        return RevocationList.objects.create(account=account, issuer_key=issuer_key, **fields)


def remove_crl(account, crl_id):
    """Remove one of the account's CRLs (account None: one of the operator's)."""
    try:
        deleted, _ = RevocationList.objects.filter(account=account, pk=int(crl_id)).delete()
    except (ValueError, TypeError):
        deleted = 0
    if not deleted:
        raise NotFound("no such CRL")


def learn_autocrypt(account, message: bytes):
    """Learn (or refresh) the sender's key from the message's Autocrypt header, if valid.
    Returns the PeerKey or None."""
    from secmail import autocrypt

    from_address, effective, header = autocrypt.from_message(message)
    if header is None:
        return None
    newer = PeerKey.objects.filter(account=account, kind=OPENPGP, address=from_address, source=PeerKey.AUTOCRYPT,
                                   seen_at__gte=effective)
    if newer.exists():
        return None  # §2.3: only a newer message replaces what we learned
    try:
        (info,) = openpgp.inspect(header.keydata)
        public = openpgp.armor_public(header.keydata)
    except (ValueError, InvalidInput):
        return None
    if not info.can_encrypt or info.revoked or info.expired:
        return None
    with transaction.atomic():
        PeerKey.objects.filter(account=account, kind=OPENPGP, address=from_address, source=PeerKey.AUTOCRYPT).exclude(
            fingerprint=info.fingerprint).delete()
        return _upsert_peer(account, kind=OPENPGP, address=from_address, fingerprint=info.fingerprint, label=info.label,
                            public_data=public, source=PeerKey.AUTOCRYPT, not_after=info.expires, seen_at=effective,
                            prefer_encrypt=header.prefer_encrypt)


def learn_from_wkd(account, address):
    """Look the address up in its domain's Web Key Directory; keep what is found (or None)."""
    from secmail import wkd

    return keep_wkd_key(account, address, wkd.lookup(address))


def keep_wkd_key(account, address, found):
    """Keep what a WKD lookup (secmail.wkd.lookup) found for the address, or None."""
    if found is None:
        return None
    info, public = found
    return _upsert_peer(account, kind=OPENPGP, address=address, fingerprint=info.fingerprint, label=info.label,
                        public_data=public, source=PeerKey.WKD, not_after=info.expires, seen_at=timezone.now())

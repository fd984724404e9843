"""Reading a message: decrypt what is ours, verify what is signed, say exactly what is covered.

Implementation notes (the EFAIL and signature-spoofing defences live here):
- Only the spine of the message is unwrapped: the root, and again the root of whatever a
  decryption or signature layer holds. An encrypted part nested inside an unencrypted
  multipart is never decrypted (Decryption.NESTED_REFUSED): decrypting it would let an
  attacker wrap a captured ciphertext in HTML of their own (EFAIL "direct exfiltration").
- A signature on the spine covers the whole displayed content (part ""); one found deeper
  covers only its part (part "1.2", …) and the badge becomes "partial" (results.py). Inline
  PGP signatures cover only the armoured text of one text part.
- The returned `content` is an ordinary RFC 5322 message (outer header fields + the
  unwrapped entity) for the webmail's usual renderer: HTML in it is sanitised and remote
  content stays blocked there; decrypted HTML is marked so the UI never offers to load
  remote content for it (MessageSecurity.encrypted).
- A decrypted entity's own header fields (protected headers: the real Subject when the
  outer one is "...") replace the outer ones in `content`; MessageSecurity.subject has it.
- S/MIME signers whose chain verified are checked for revocation (secmail.revocation, one
  Checker per reading: imported CRLs read once, network answers cached).
- Nothing here writes: harvesting certificates and Autocrypt keys is secmail.actions'.
- Bounded: at most MAX_LAYERS wrappings and MAX_PARTS parts are looked at.
"""
import email.utils

from django.db.models import Q

from secmail import mimeraw, models, openpgp, revocation, smime
from secmail.errors import CryptoFailure
from secmail.results import Decryption, MessageSecurity, SignatureResult, Status

MAX_LAYERS = 6
MAX_PARTS = 200
SMIME_SIG_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
SMIME_MIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}


class Reader:
    def __init__(self, account, unlocked=(), now=None):
        """`unlocked`: secmail.keys.UnlockedKey of the account's keys open in this session."""
        self.account = account
        self.unlocked = {u.own_key.pk: u for u in unlocked}
        self.now = now
        self._trusted = None
        self.revocation = revocation.Checker(account)

    # -- keys ------------------------------------------------------------------------
    def trusted_cas(self):
        if self._trusted is None:
            self._trusted = [smime.load_certificate(ca.pem) for ca in models.TrustedCA.objects.filter(account=self.account)]
        return self._trusted

    def pgp_keys_for(self, address):
        """Public keys to check a signature from `address`: the address book's and our own."""
        peers = [p.public_data for p in models.PeerKey.objects.filter(account=self.account, kind=models.OPENPGP, address=address.lower())]
        # Our own keys, and the keys local accounts publish (the server's own directory).
        own = [k.public_data for k in models.OwnKey.objects.filter(kind=models.OPENPGP).filter(
               Q(account=self.account) | Q(published=True))
               if address.lower() in k.addresses and k.public_data]
        return peers + own

    def pgp_key_by_fingerprint(self, fingerprint):
        """(public key, addresses, label, source) of a known key, whichever address it was learned for."""
        if not fingerprint:
            return None
        own = models.OwnKey.objects.filter(account=self.account, kind=models.OPENPGP, fingerprint=fingerprint).first()
        if own:
            return own.public_data, list(own.addresses), own.label, "own"
        peers = list(models.PeerKey.objects.filter(account=self.account, kind=models.OPENPGP, fingerprint=fingerprint))
        if peers:
            return peers[0].public_data, sorted({p.address for p in peers}), peers[0].label, peers[0].source
        local = models.OwnKey.objects.filter(kind=models.OPENPGP, fingerprint=fingerprint, published=True).first()
        if local:
            return local.public_data, list(local.addresses), local.label, "directory"
        return None

    # -- the walk --------------------------------------------------------------------
    def read(self, message: bytes) -> MessageSecurity:
        message = mimeraw.canonical(message)
        outer, entity = mimeraw.split_message(message)
        headers = mimeraw.parse_headers(b"".join(outer))
        self.from_address = email.utils.parseaddr(str(headers.get("From", "")))[1].lower()
        security = MessageSecurity()
        entity = self._spine(entity, security)
        self._parts = 0
        self._nested(entity, "", security)
        if security.decryption is Decryption.DECRYPTED:
            outer, entity = self._protected_headers(outer, entity, security)
        security.content = mimeraw.join_message(outer, entity)
        return security

    @staticmethod
    def _protected_headers(outer, entity, security):
        """Header fields inside the decrypted entity (protected headers, as outgoing.py and
        Thunderbird write them) take the place of the outer ones: the outer Subject of such
        a message is "..."; the real one was encrypted. Only for what was decrypted here."""
        head, body = mimeraw.split_header_body(entity)
        fields = mimeraw.header_fields(head)
        inner = [f for f in fields if not mimeraw.field_name(f).startswith("content-") and mimeraw.field_name(f) != "mime-version"]
        if not any(mimeraw.field_name(f) == "subject" for f in inner):
            return outer, entity
        names = {mimeraw.field_name(f) for f in inner}
        outer = [f for f in outer if mimeraw.field_name(f) not in names] + inner
        security.subject = str(mimeraw.parse_headers(b"".join(inner)).get("Subject", "")).strip()
        return outer, b"".join(f for f in fields if f not in inner) + b"\r\n" + body

    def _spine(self, entity, security):
        """Unwrap encryption and signature layers at the root; return the displayable entity."""
        for _ in range(MAX_LAYERS):
            head, body = mimeraw.split_header_body(entity)
            ctype, params = mimeraw.content_type(head)
            if ctype == "multipart/signed":
                signature, inner = self._multipart_signed(body, params, part="")
                security.signatures.append(signature)
                if inner is None:
                    return entity
                entity = inner
            elif ctype in SMIME_MIME_TYPES:
                smime_type = params.get("smime-type", "").lower()
                try:
                    der = smime.decode_body(head, body)
                except CryptoFailure:
                    security.detail = "damaged S/MIME data"
                    return entity
                if smime_type == "signed-data" or (not smime_type and smime.signed_data_type(der) == "signed_data"):
                    signature, inner = smime.verify(None, der, from_address=self.from_address, trusted_cas=self.trusted_cas(), now=self.now,
                                                    revocation=self.revocation)
                    security.signatures.append(signature)
                    if inner is None or signature.status is Status.MALFORMED:
                        return entity
                    entity = mimeraw.canonical(inner)
                else:
                    security.encrypted, security.scheme = True, models.SMIME
                    inner = self._smime_decrypt(der, security)
                    if inner is None:
                        return entity
                    entity = mimeraw.canonical(inner)
            elif ctype == "multipart/encrypted" and params.get("protocol", "").lower() == "application/pgp-encrypted":
                security.encrypted, security.scheme = True, models.OPENPGP
                try:
                    payload = mimeraw.split_header_body(mimeraw.split_multipart(body, params.get("boundary", ""))[1])[1]
                except (mimeraw.MimeError, IndexError):
                    security.decryption, security.detail = Decryption.FAILED, "not a PGP/MIME encrypted message"
                    return entity
                inner = self._pgp_decrypt(payload, security, part="")
                if inner is None:
                    return entity
                entity = mimeraw.canonical(inner)
            elif ctype == "text/plain" and b"-----BEGIN PGP MESSAGE-----" in body and not security.encrypted:
                # Inline PGP (read-only): the whole text part is the ciphertext.
                security.encrypted, security.scheme = True, models.OPENPGP
                plain = self._pgp_decrypt(smime.decode_body(head, body), security, part="", inline=True)
                if plain is None:
                    return entity
                return b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + mimeraw.canonical(plain)
            else:
                return entity
        return entity

    def _nested(self, entity, path, security):
        """Look below the spine for signed parts (partial) and encrypted parts (refused)."""
        self._parts += 1
        if self._parts > MAX_PARTS:
            return
        head, body = mimeraw.split_header_body(entity)
        ctype, params = mimeraw.content_type(head)
        if ctype == "multipart/signed" and path:
            signature, _ = self._multipart_signed(body, params, part=path)
            security.signatures.append(signature)
        elif path and (ctype in SMIME_MIME_TYPES or ctype == "multipart/encrypted"):
            if security.decryption is Decryption.NONE:
                security.decryption = Decryption.NESTED_REFUSED
            return
        elif ctype == "text/plain" and b"-----BEGIN PGP SIGNED MESSAGE-----" in body:
            self._inline_signed(head, body, path or "", security)
            return
        if ctype.startswith("multipart/"):
            try:
                parts = mimeraw.split_multipart(body, params.get("boundary", ""))
            except mimeraw.MimeError:
                return
            for number, part in enumerate(parts, 1):
                self._nested(part, f"{path}.{number}" if path else str(number), security)

    # -- S/MIME ----------------------------------------------------------------------
    def _smime_decrypt(self, der, security):
        try:
            ours = [k for k in models.OwnKey.objects.filter(account=self.account, kind=models.SMIME) if k.public_data
                    and smime.is_recipient(der, smime.load_certificate(k.public_data))]
        except CryptoFailure:
            security.decryption = Decryption.FAILED
            return None
        if not ours:
            security.decryption = Decryption.NO_KEY
            return None
        for own in ours:
            unlocked = self.unlocked.get(own.pk)
            if unlocked is not None:
                try:
                    inner = smime.decrypt(der, unlocked.smime_cert, unlocked.smime_key)
                except CryptoFailure:
                    security.decryption = Decryption.FAILED
                    return None
                security.decryption = Decryption.DECRYPTED
                return inner
        security.decryption = Decryption.LOCKED
        return None

    # -- OpenPGP ---------------------------------------------------------------------
    def _pgp_decrypt(self, data, security, part, inline=False):
        candidates = [self.unlocked[k.pk] for k in models.OwnKey.objects.filter(account=self.account, kind=models.OPENPGP)
                      if k.pk in self.unlocked]
        if not candidates:
            has_keys = models.OwnKey.objects.filter(account=self.account, kind=models.OPENPGP, sealed_private__isnull=False).exists()
            security.decryption = Decryption.LOCKED if has_keys else Decryption.NO_KEY
            return None
        known = self.pgp_keys_for(self.from_address)
        for unlocked in candidates:
            try:
                decrypted = openpgp.decrypt(data, unlocked.openpgp_secret, known)
            except CryptoFailure:
                continue
            security.decryption = Decryption.DECRYPTED
            if decrypted.signature is not None:
                outcome = decrypted.signature
                if outcome.status is Status.UNKNOWN_KEY and (found := self.pgp_key_by_fingerprint(outcome.fingerprint)):
                    # the signer's key is known under another address: check again with it,
                    # through the session key (one decryption per reading, not two)
                    outcome = openpgp.check_signature_again(data, decrypted.session_key, [found[0]]) or outcome
                security.signatures.append(self._judge_pgp(outcome, part, inline))
            return decrypted.data
        security.decryption = Decryption.NO_KEY
        return None

    def _judge_pgp(self, outcome, part, inline=False):
        found = self.pgp_key_by_fingerprint(outcome.fingerprint)
        info = None
        source = ""
        if found:
            _, addresses, label, source = found
            info = openpgp.KeyInfo(outcome.fingerprint, [label], addresses, None, False, False, False, True)
        return openpgp.judge(outcome, key=info, from_address=self.from_address, key_source=source, part=part, inline=inline)

    def _pgp_verify(self, content, signature, part):
        outcome = openpgp.verify_detached(content, signature, self.pgp_keys_for(self.from_address))
        if outcome.status is Status.UNKNOWN_KEY and (found := self.pgp_key_by_fingerprint(outcome.fingerprint)):
            outcome = openpgp.verify_detached(content, signature, [found[0]])
        return self._judge_pgp(outcome, part)

    def _inline_signed(self, head, body, part, security):
        text = smime.decode_body(head, body)
        outcome, _ = openpgp.verify_inline(text, self.pgp_keys_for(self.from_address))
        if outcome.status is Status.UNKNOWN_KEY and (found := self.pgp_key_by_fingerprint(outcome.fingerprint)):
            outcome, _ = openpgp.verify_inline(text, [found[0]])
        security.signatures.append(self._judge_pgp(outcome, part, inline=True))

    # -- multipart/signed (RFC 1847 §2.1) --------------------------------------------
    def _multipart_signed(self, body, params, part):
        """(SignatureResult, the signed entity or None)."""
        protocol = params.get("protocol", "").lower()
        scheme = models.OPENPGP if protocol == "application/pgp-signature" else models.SMIME
        try:
            parts = mimeraw.split_multipart(body, params.get("boundary", ""))
            if len(parts) != 2:
                raise mimeraw.MimeError("multipart/signed needs exactly two parts")
            content, signature_part = parts
            sig_head, sig_body = mimeraw.split_header_body(signature_part)
            sig_type, _ = mimeraw.content_type(sig_head)
        except mimeraw.MimeError as exc:
            return SignatureResult(scheme=scheme, status=Status.MALFORMED, part=part, detail=str(exc)), None
        if protocol in SMIME_SIG_TYPES and sig_type in SMIME_SIG_TYPES:
            try:
                der = smime.decode_body(sig_head, sig_body)
            except CryptoFailure:
                return SignatureResult(scheme=scheme, status=Status.MALFORMED, part=part), content
            result, _ = smime.verify(content, der, from_address=self.from_address, trusted_cas=self.trusted_cas(), now=self.now,
                                     revocation=self.revocation, part=part)
            return result, content
        if protocol == "application/pgp-signature" and sig_type == "application/pgp-signature":
            return self._pgp_verify(content, smime.decode_body(sig_head, sig_body), part), content
        return SignatureResult(scheme=scheme, status=Status.UNSUPPORTED, part=part, detail=f"signature protocol {protocol}"), content


def read(account, message: bytes, unlocked=(), now=None) -> MessageSecurity:
    return Reader(account, unlocked, now).read(message)

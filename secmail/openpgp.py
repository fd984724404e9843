"""OpenPGP (RFC 9580 / RFC 4880) through GnuPG, driven by python-gnupg.

Implementation notes:
- Every operation runs in its own temporary GNUPGHOME (Keyring) holding only the keys that
  operation needs, imported from the database, and is removed after it (its gpg-agent is
  killed first). No long-lived keyring exists on the server: the database is the only store,
  and a secret key is never on disk outside such a directory (mode 0700) for the length of
  one operation.
- Trust is decided here, not by gpg's web of trust: keys are imported with trust-model
  "always" for encryption, and a verified signature is judged by whose key it is (an
  address-book PeerKey for the sender's address, or an own key) in secmail.reader.
- Secret keys come as SecretKey(armored, passphrase): the armoured export as gpg gave it and
  the passphrase protecting it inside gpg ("" for keys made here, which gpg keeps
  unprotected because the whole blob is sealed by secmail.sealing). python-gnupg takes an
  empty passphrase as one to send: "" is passed to it as None.
- New keys: Ed25519 signing primary + Curve25519 encryption subkey (RFC 9580 §9.1 curves
  that every current implementation reads), two years of validity.
"""
import dataclasses
import datetime
import logging
import os
import shutil
import subprocess
import tempfile

import gnupg
from django.utils.translation import gettext

from secmail.errors import BadPassphrase, CryptoFailure, InvalidInput
from secmail.results import SignatureResult, Status

GPG_BINARY = "gpg"
# python-gnupg logs every gpg status line at DEBUG; one of decrypt()'s is the message's
# session key (SESSION_KEY), which opens the stored ciphertext: never below INFO.
logging.getLogger("gnupg").setLevel(logging.INFO)
KEY_VALIDITY = "2y"
# RFC 4880 §9.4 hash algorithm ids -> RFC 3156 §5 micalg names
MICALG = {"2": "pgp-sha1", "8": "pgp-sha256", "9": "pgp-sha384", "10": "pgp-sha512", "11": "pgp-sha224"}
MAX_KEY_BYTES = 256 * 1024  # an imported key block larger than this is refused


@dataclasses.dataclass
class SecretKey:
    armored: str
    passphrase: str = ""


@dataclasses.dataclass
class KeyInfo:
    fingerprint: str
    uids: list
    addresses: list
    expires: datetime.datetime | None
    revoked: bool
    expired: bool
    can_encrypt: bool
    can_sign: bool
    has_secret: bool = False

    @property
    def label(self):
        return self.uids[0] if self.uids else self.fingerprint


class Keyring:
    """A throwaway GnuPG home for one operation."""

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="secmail-gpg-")  # short path: gpg-agent's socket lives here
        # The agent re-protects an imported passphrase-protected key with a calibrated S2K
        # (seconds on a busy machine); in a home that lives for one operation the minimum
        # is enough — at rest the key is sealed by secmail.sealing.
        with open(os.path.join(self.home, "gpg-agent.conf"), "w") as f:
            f.write("s2k-count 65536\n")
        # loopback: a missing passphrase is an error at once, never a pinentry waiting for a person
        self.gpg = gnupg.GPG(gpgbinary=GPG_BINARY, gnupghome=self.home, options=["--pinentry-mode", "loopback"])
        self.gpg.encoding = "utf-8"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"], capture_output=True, timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)

    def import_keys(self, data):
        if isinstance(data, str):
            data = data.encode()
        if len(data) > MAX_KEY_BYTES:
            raise InvalidInput("the key block is too large")
        result = self.gpg.import_keys(data)
        return [f for f in result.fingerprints if f]

    def import_secret(self, secret: SecretKey):
        fingerprints = self.import_keys(secret.armored)
        if not fingerprints:
            raise CryptoFailure("the stored secret key does not import")
        return fingerprints[0]

    def keys(self, secret=False):
        return [_key_info(k, secret) for k in self.gpg.list_keys(secret)]

    def path(self, name, data):
        path = os.path.join(self.home, name)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path


def _timestamp(value):
    return datetime.datetime.fromtimestamp(int(value), datetime.timezone.utc) if value else None


def _addresses(uids):
    from email.utils import parseaddr

    found = []
    for uid in uids:
        address = parseaddr(uid)[1].lower()
        if "@" in address and address not in found:
            found.append(address)
    return found


def _key_info(key, secret=False):
    caps = key.get("cap", "")
    expires = _timestamp(key.get("expires"))
    return KeyInfo(
        fingerprint=key["fingerprint"],
        uids=list(key.get("uids", [])),
        addresses=_addresses(key.get("uids", [])),
        expires=expires,
        revoked=key.get("trust") == "r",
        expired=key.get("trust") == "e",
        can_encrypt="E" in caps,
        can_sign="S" in caps,
        has_secret=secret,
    )


# ---- keys ------------------------------------------------------------------------------

def inspect(data) -> list:
    """Public keys in an armoured or binary key block, as KeyInfo."""
    with Keyring() as ring:
        if not ring.import_keys(data):
            raise InvalidInput("no OpenPGP key found")
        return ring.keys()


def generate(name: str, address: str):
    """(KeyInfo, armoured public key, SecretKey) for a new key pair."""
    with Keyring() as ring:
        params = ring.gpg.gen_key_input(
            key_type="EDDSA", key_curve="ed25519", key_usage="sign",
            subkey_type="ECDH", subkey_curve="cv25519", subkey_usage="encrypt",
            name_real=name or address, name_email=address, expire_date=KEY_VALIDITY, no_protection=True,
        )
        made = ring.gpg.gen_key(params)
        if not made.fingerprint:
            raise CryptoFailure("gpg could not make a key")
        public = ring.gpg.export_keys(made.fingerprint)
        secret = ring.gpg.export_keys(made.fingerprint, secret=True, passphrase="", expect_passphrase=False)
        return ring.keys(secret=True)[0], public, SecretKey(secret, "")


def import_secret(armored: str, passphrase: str):
    """(KeyInfo, public armoured, SecretKey) from an exported secret key; the passphrase that
    protects it in the file is checked by signing with it once."""
    with Keyring() as ring:
        fingerprints = ring.import_keys(armored)
        secrets_ = ring.keys(secret=True)
        if not fingerprints or not secrets_:
            raise InvalidInput("no OpenPGP secret key found")
        info = secrets_[0]
        probe = ring.gpg.sign(b"probe", keyid=info.fingerprint, passphrase=passphrase or None, detach=True)
        if not probe.data:
            raise BadPassphrase(gettext("wrong passphrase for the OpenPGP key"))
        public = ring.gpg.export_keys(info.fingerprint)
        secret = ring.gpg.export_keys(info.fingerprint, secret=True, passphrase=passphrase or "", expect_passphrase=bool(passphrase))
        return info, public, SecretKey(secret, passphrase or "")


def minimal_key(public_armored: str, address: str | None = None) -> bytes:
    """The binary transferable public key reduced to what a correspondent needs (Autocrypt
    Level 1 §2.1.1, WKD): self-signatures only and, with `address`, only the user ids for it."""
    with Keyring() as ring:
        fingerprints = ring.import_keys(public_armored)
        if not fingerprints:
            raise InvalidInput("no OpenPGP key found")
        args = ["--export-options", "export-minimal"]
        if address:
            args += ["--export-filter", f"keep-uid=mbox = {address}"]
        done = subprocess.run([GPG_BINARY, "--homedir", ring.home, "--batch", *args, "--export", fingerprints[0]],
                              capture_output=True, timeout=60)
        if done.returncode != 0 or not done.stdout:
            raise InvalidInput("the key has no user id for that address")
        return done.stdout


def armor_public(binary: bytes) -> str:
    with Keyring() as ring:
        fingerprints = ring.import_keys(binary)
        if not fingerprints:
            raise InvalidInput("no OpenPGP key found")
        return ring.gpg.export_keys(fingerprints[0])


# ---- operations ------------------------------------------------------------------------

def sign_detached(data: bytes, secret: SecretKey):
    """(ASCII-armoured detached signature, micalg) over `data` (RFC 3156 §5)."""
    with Keyring() as ring:
        fingerprint = ring.import_secret(secret)
        signed = ring.gpg.sign(data, keyid=fingerprint, passphrase=secret.passphrase or None, detach=True,
                               extra_args=["--digest-algo", "SHA256"])
        if not signed.data:
            raise CryptoFailure(f"gpg could not sign ({signed.status})")
        return signed.data.decode("ascii"), MICALG.get(str(signed.hash_algo), "pgp-sha256")


def encrypt(data: bytes, recipients_public, sign_with: SecretKey | None = None) -> str:
    """ASCII-armoured OpenPGP message for all `recipients_public` keys, signed inside when
    `sign_with` is given (RFC 3156 §6.2, the combined form)."""
    with Keyring() as ring:
        fingerprints = []
        for key in recipients_public:
            fingerprints += ring.import_keys(key)[:1]
        kwargs = {}
        if sign_with is not None:
            kwargs = {"sign": ring.import_secret(sign_with), "passphrase": sign_with.passphrase or None}
        done = ring.gpg.encrypt(data, fingerprints, always_trust=True, armor=True,
                                extra_args=["--digest-algo", "SHA256"], **kwargs)
        if not done.ok:
            raise CryptoFailure(f"gpg could not encrypt ({done.status})")
        return str(done)


def encrypted_to(data: bytes) -> list:
    """Key ids (16 hex digits, upper case) the message is encrypted to (RFC 9580 §5.1)."""
    with Keyring() as ring:
        listed = subprocess.run(
            [GPG_BINARY, "--homedir", ring.home, "--batch", "--status-fd", "1", "--list-only", "--list-packets"],
            input=data, capture_output=True, timeout=60,
        )
        ids = []
        for line in listed.stdout.decode("ascii", "replace").splitlines():
            if line.startswith("[GNUPG:] ENC_TO "):
                ids.append(line.split()[2].upper())
        return ids


@dataclasses.dataclass
class Outcome:
    """What gpg said about one signature, before secmail judges whose key it is."""

    status: Status
    fingerprint: str = ""  # primary key fingerprint of the signer
    key_id: str = ""
    signed_at: datetime.datetime | None = None
    detail: str = ""


def _outcome(verified) -> Outcome | None:
    """Read gpg's status lines (doc/DETAILS of GnuPG) for the signature; None if there is none.

    python-gnupg's own summary is overwritten by later status lines when decrypting, so the
    lines themselves are read here."""
    lines = [line[9:].split(" ") for line in (verified.stderr or "").splitlines() if line.startswith("[GNUPG:] ")]
    signatures = sum(1 for words in lines if words[0] == "NEWSIG")
    if not signatures:
        return None
    if signatures > 1:
        return Outcome(Status.UNSUPPORTED, detail="several signatures (exactly one is supported)")
    seen = {words[0]: words[1:] for words in lines}
    outcome = Outcome(Status.MALFORMED, detail="unreadable signature")
    if "VALIDSIG" in seen:
        args = seen["VALIDSIG"]
        outcome.fingerprint = args[9] if len(args) > 9 else args[0]  # the primary key's, not the subkey's
        outcome.signed_at = _timestamp(args[2])
    for word in ("GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "ERRSIG"):
        if word in seen:
            outcome.key_id = seen[word][0].upper()
    if "BADSIG" in seen:
        outcome.status, outcome.detail = Status.TAMPERED, "the signature does not match"
    elif "ERRSIG" in seen:
        args = seen["ERRSIG"]
        if len(args) > 6 and args[6] != "-":
            outcome.fingerprint = args[6]
        outcome.signed_at = _timestamp(args[4]) if len(args) > 4 and args[4].isdigit() else None
        if len(args) > 5 and args[5] == "9":
            outcome.status, outcome.detail = Status.UNKNOWN_KEY, f"key {outcome.fingerprint or outcome.key_id}"
        else:
            outcome.status, outcome.detail = Status.UNSUPPORTED, "gpg cannot check this signature"
    elif "EXPKEYSIG" in seen:
        outcome.status, outcome.detail = Status.EXPIRED, "the signing key has expired"
    elif "REVKEYSIG" in seen:
        outcome.status, outcome.detail = Status.REVOKED, "the signing key was revoked"
    elif "EXPSIG" in seen:
        outcome.status, outcome.detail = Status.EXPIRED, "the signature has expired"
    elif "GOODSIG" in seen and "VALIDSIG" in seen:
        outcome.status, outcome.detail = Status.VALID, ""
    return outcome


def verify_detached(data: bytes, signature: bytes, public_keys) -> Outcome:
    with Keyring() as ring:
        for key in public_keys:
            ring.import_keys(key)
        sig_path = ring.path("signature.asc", signature)
        verified = ring.gpg.verify_data(sig_path, data)
        return _outcome(verified) or Outcome(Status.MALFORMED, detail="no signature found")


def verify_inline(text: bytes, public_keys):
    """(Outcome, signed text) of a cleartext-signed message (RFC 9580 §7)."""
    with Keyring() as ring:
        for key in public_keys:
            ring.import_keys(key)
        out_path = os.path.join(ring.home, "out")
        verified = ring.gpg.verify(text, extra_args=["--output", out_path])
        signed_text = b""
        if os.path.exists(out_path):
            with open(out_path, "rb") as f:
                signed_text = f.read()
        return _outcome(verified) or Outcome(Status.MALFORMED, detail="no signature found"), signed_text


@dataclasses.dataclass
class Decrypted:
    data: bytes
    signature: Outcome | None  # a signature inside the encryption (combined form), if any
    # "algo:hex" (gpg's SESSION_KEY status): lets check_signature_again() verify the inner
    # signature against other keys without the private key and without decrypting anew.
    # Held in memory for one reading, never stored or logged.
    session_key: str = dataclasses.field(default="", repr=False)


def decrypt(data: bytes, secret: SecretKey, public_keys=()) -> Decrypted:
    """Decrypt with `secret`; a signature inside is checked against `public_keys`."""
    with Keyring() as ring:
        ring.import_secret(secret)
        for key in public_keys:
            ring.import_keys(key)
        done = ring.gpg.decrypt(data, passphrase=secret.passphrase or None, always_trust=True,
                                extra_args=["--show-session-key"])
        if not done.ok:
            raise CryptoFailure(f"gpg could not decrypt ({done.status})")
        session_key = next((line.split(" ", 2)[2].strip() for line in (done.stderr or "").splitlines()
                            if line.startswith("[GNUPG:] SESSION_KEY ")), "")
        return Decrypted(done.data, _outcome(done), session_key)


class _Status:
    """What _outcome() reads of a gpg run: its status lines."""

    def __init__(self, stderr):
        self.stderr = stderr


def check_signature_again(data: bytes, session_key: str, public_keys) -> Outcome | None:
    """The inner signature of an encrypted message, checked against `public_keys`, opening
    it with the session key a decrypt() found (passed on a pipe, never on the command line)."""
    if not session_key:
        return None
    with Keyring() as ring:
        for key in public_keys:
            ring.import_keys(key)
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, session_key.encode("ascii") + b"\n")
            os.close(write_end)
            write_end = None
            done = subprocess.run(
                [GPG_BINARY, "--homedir", ring.home, "--batch", "--status-fd", "2", "--trust-model", "always",
                 "--override-session-key-fd", str(read_end), "--output", os.devnull, "--decrypt"],
                input=data, capture_output=True, timeout=60, pass_fds=(read_end,),
            )
        finally:
            os.close(read_end)
            if write_end is not None:
                os.close(write_end)
        return _outcome(_Status(done.stderr.decode("utf-8", "replace")))


def judge(outcome: Outcome, *, key: KeyInfo | None, from_address: str, key_source: str, part="", inline=False):
    """A SignatureResult from gpg's outcome and what we know of the signer's key."""
    result = SignatureResult(scheme="openpgp", status=outcome.status, part=part, fingerprint=outcome.fingerprint,
                             signed_at=outcome.signed_at, detail=outcome.detail, key_source=key_source, inline=inline)
    if key is not None:
        result.signer_addresses = key.addresses
        result.signer_name = key.label
    if result.status is Status.VALID and from_address.lower() not in result.signer_addresses:
        result.status = Status.WRONG_ADDRESS
        result.detail = f"the key is for {', '.join(result.signer_addresses) or 'no address'}, the sender is {from_address}"
    return result

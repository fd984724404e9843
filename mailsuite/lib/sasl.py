"""Server-side SASL (RFC 4422) for the SMTP, IMAP, POP3 and ManageSieve servers.

Pure functions and small state machines over bytes: no sockets, no Django, no ORM.
The protocol layer owns the base64 framing (`decode_response`, `encode_challenge`
help with it), the line-length limits, and mapping `SaslError` to its reply
(535 5.7.8 / NO [AUTHENTICATIONFAILED] / -ERR / NO).

Implementation notes (invariants):

- `SaslError` text is for logs, never for the wire, and never contains a password,
  a proof or any other AUTH payload.
- Every failure inside a mechanism is a `SaslError`; nothing else escapes `step()`,
  whatever bytes the client sends (a hypothesis test holds us to this). Exceptions
  raised by the caller's `lookup` are server faults and propagate unchanged.
- SCRAM does not reveal whether a user exists: an unknown user gets made-up
  credentials of the same shape and the exchange fails only on the client's proof.
- Secrets are compared with `hmac.compare_digest`.
- Every message is bounded (`MAX_MESSAGE_OCTETS`); the client bounds the server's
  iteration count so a hostile server cannot make it spin.

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login-00),
SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding; stored credentials in
the RFC 5803 form. SASLprep is RFC 4013 over the stdlib `stringprep` tables.
"""
import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096  # RFC 7677 §4: at least 4096
DEFAULT_SALT_OCTETS = 16
MAX_MESSAGE_OCTETS = 4096  # SCRAM and PLAIN messages are a few hundred octets at most
MAX_CLIENT_ITERATIONS = 1_000_000  # our client's bound on the server's "i=" (~1 s of PBKDF2)
_DIGEST_OCTETS = hashlib.sha256().digest_size

# Made-up credentials for unknown users are keyed with this. A caller that wants them
# stable across restarts passes its own `fake_secret` to ScramSha256Server.
_PROCESS_SECRET = secrets.token_bytes(32)


class SaslError(Exception):
    """The exchange failed; the message is for logs, never for the wire."""


class SaslAborted(SaslError):
    """The client cancelled the exchange with "*" (RFC 4954 §4, RFC 9051 §6.2.2)."""


# --- Framing helpers for the protocol layer ------------------------------------------


def decode_response(line: bytes, *, initial: bool = False) -> bytes:
    """The decoded client response from one base64 line (CRLF already stripped).

    "*" cancels the exchange (RFC 4954 §4): SaslAborted. An initial response of "="
    is an empty response (RFC 4954 §4, RFC 4959 §3). Anything that is not canonical
    base64 raises SaslError.
    """
    if line == b"*":
        raise SaslAborted("client cancelled the exchange")
    if initial and line == b"=":
        return b""
    return _b64decode(line, "response")


def encode_challenge(challenge: bytes) -> bytes:
    """A server challenge as the base64 text that follows "334 " or "+ "."""
    return base64.b64encode(challenge)


def _b64decode(data, what):
    """Decode canonical base64 only: no whitespace, padding as required, zero spare bits."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise SaslError(f"{what} is not base64") from None
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError(f"{what} is not base64") from None
    # b64decode accepts e.g. "QR==" for "QQ=="; a second spelling of the same bytes
    # is at best a broken client, so insist on the one canonical form.
    if base64.b64encode(decoded) != data:
        raise SaslError(f"{what} is not canonical base64")
    return decoded


def _b64encode(data):
    return base64.b64encode(data).decode("ascii")


# --- SASLprep (RFC 4013) -------------------------------------------------------------

_PROHIBITED_TABLES = (  # RFC 4013 §2.3
    stringprep.in_table_c12,  # non-ASCII space
    stringprep.in_table_c21,  # ASCII control
    stringprep.in_table_c22,  # non-ASCII control
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogates
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties / deprecated
    stringprep.in_table_c9,  # tagging characters
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """`text` prepared with the SASLprep profile of stringprep (RFC 4013).

    `allow_unassigned` selects "query" semantics (RFC 3454 §7): True for names the
    client sends, False for strings we store. Unicode 3.2 is the reference version
    (RFC 3454 §1.2), so "unassigned" means unassigned in Unicode 3.2; the stdlib
    tables and `unicodedata.ucd_3_2_0` give exactly that. Raises ValueError for
    prohibited output, unassigned code points when not allowed, and bidi violations.
    An empty result is returned as is; callers decide whether it is acceptable.
    """
    # RFC 4013 §2.1: non-ASCII spaces map to SPACE, "commonly mapped to nothing" go.
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)  # RFC 4013 §2.2
    for char in prepared:
        if any(in_table(char) for in_table in _PROHIBITED_TABLES):
            raise ValueError(f"prohibited character U+{ord(char):04X}")
        if not allow_unassigned and stringprep.in_table_a1(char):  # RFC 4013 §2.5
            raise ValueError(f"unassigned code point U+{ord(char):04X}")
    _check_bidi(prepared)
    return prepared


def _check_bidi(text):
    """RFC 3454 §6 (required by RFC 4013 §2.4); table C.8 is already prohibited."""
    if not any(stringprep.in_table_d1(char) for char in text):
        return
    if any(stringprep.in_table_d2(char) for char in text):
        raise ValueError("string mixes right-to-left and left-to-right characters")
    if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
        raise ValueError("right-to-left string must start and end with a right-to-left character")


def _prepare_password(password):
    """The octets SCRAM's Hi() hashes: Normalize(password) of RFC 5802 §2.2.

    SASLprep as a stored string. Where SASLprep is not defined for the password
    (prohibited characters, code points unassigned in Unicode 3.2 such as most
    emoji, bidi violations) the password's UTF-8 octets are used as they are, the
    way PostgreSQL does: refusing such passwords would lock their owners out of
    SCRAM while PLAIN keeps working. Raises ValueError for a password that is empty
    once prepared or cannot be encoded (lone surrogates).
    """
    try:
        prepared = saslprep(password).encode("utf-8")
    except ValueError:
        prepared = password.encode("utf-8")  # UnicodeEncodeError is a ValueError too
    if not prepared:
        raise ValueError("empty password")
    return prepared


# --- PLAIN (RFC 4616) and LOGIN ------------------------------------------------------


def decode_plain(response: bytes) -> tuple[str, str, str]:
    """RFC 4616 PLAIN: (authzid, authcid, password) from the decoded (not base64) message.

    message = [authzid] NUL authcid NUL passwd (RFC 4616 §2); authzid is "" when
    absent. The strings are returned as sent, not SASLprep'd: RFC 4616 §2 leaves
    preparation to the verifier, and our stored hashes of the password were made
    from the unprepared password. Raises SaslError on malformed input (wrong number
    of NULs, empty authcid or password, invalid UTF-8, oversized message).
    """
    if len(response) > MAX_MESSAGE_OCTETS:
        raise SaslError("PLAIN message too long")
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise SaslError(f"PLAIN message has {len(parts) - 1} NULs, not 2")
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SaslError("PLAIN message is not UTF-8") from None
    if not authcid:
        raise SaslError("PLAIN message has an empty authcid")
    if not password:
        raise SaslError("PLAIN message has an empty password")
    return authzid, authcid, password


def login_challenges() -> tuple[bytes, bytes]:
    """The two AUTH LOGIN prompts (draft-murchison-sasl-login-00 §2), not base64-encoded."""
    return b"Username:", b"Password:"


# --- SCRAM stored credentials (RFC 5802 §3, RFC 5803) --------------------------------


@dataclass(frozen=True)
class ScramCredentials:
    """What the server stores for one user: enough to verify, not to impersonate."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def __post_init__(self):
        if not 1 <= self.iterations <= 2**31 - 1:
            raise ValueError(f"iteration count {self.iterations} out of range")
        if not self.salt:
            raise ValueError("empty salt")
        if len(self.stored_key) != _DIGEST_OCTETS or len(self.server_key) != _DIGEST_OCTETS:
            raise ValueError(f"StoredKey and ServerKey must be {_DIGEST_OCTETS} octets")


def _hmac(key, message):
    return hmac.new(key, message, hashlib.sha256).digest()


def _h(data):
    return hashlib.sha256(data).digest()


def _xor(left, right):
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def _salted_password(password, salt, iterations):
    """SaltedPassword := Hi(Normalize(password), salt, i) (RFC 5802 §3)."""
    return hashlib.pbkdf2_hmac("sha256", _prepare_password(password), salt, iterations)


def _credentials_from_salted(salted_password, salt, iterations):
    client_key = _hmac(salted_password, b"Client Key")
    server_key = _hmac(salted_password, b"Server Key")
    return ScramCredentials(iterations, salt, _h(client_key), server_key)


def make_scram_credentials(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The RFC 5803 storage string for `password`.

    "SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>".
    The password is SASLprep'd as a stored string; where SASLprep is not defined
    for it (prohibited or unassigned characters) its UTF-8 octets are used as they
    are, see `_prepare_password`. A random 16-octet salt is drawn when none is given.
    Raises ValueError for an empty password, an empty salt or iterations < 1.
    """
    if salt is None:
        salt = secrets.token_bytes(DEFAULT_SALT_OCTETS)
    if not salt:
        raise ValueError("empty salt")
    if not 1 <= iterations <= 2**31 - 1:
        raise ValueError(f"iteration count {iterations} out of range")
    credentials = _credentials_from_salted(_salted_password(password, salt, iterations), salt, iterations)
    return format_scram_credentials(credentials)


def format_scram_credentials(credentials: ScramCredentials) -> str:
    """The RFC 5803 storage string for `credentials`; inverse of parse_scram_credentials."""
    return (
        f"{MECHANISM}${credentials.iterations}:{_b64encode(credentials.salt)}"
        f"${_b64encode(credentials.stored_key)}:{_b64encode(credentials.server_key)}"
    )


_B64 = r"[A-Za-z0-9+/]+={0,2}"
_STORED = re.compile(
    rf"SCRAM-SHA-256\$(?P<iterations>[1-9][0-9]{{0,9}}):(?P<salt>{_B64})"
    rf"\$(?P<stored_key>{_B64}):(?P<server_key>{_B64})"
)


def parse_scram_credentials(text: str) -> ScramCredentials:
    """Parse an RFC 5803 storage string; raises ValueError if it is malformed."""
    match = _STORED.fullmatch(text)
    if not match:
        raise ValueError("not a SCRAM-SHA-256 credentials string")
    try:
        return ScramCredentials(
            iterations=int(match["iterations"]),
            salt=_b64decode(match["salt"], "salt"),
            stored_key=_b64decode(match["stored_key"], "StoredKey"),
            server_key=_b64decode(match["server_key"], "ServerKey"),
        )
    except SaslError as error:
        raise ValueError(str(error)) from None


# --- SCRAM message syntax (RFC 5802 §7) ----------------------------------------------

_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 §7 "printable": no ","
_ESCAPE = re.compile(r"=(?:2C|3D)")
_EXTENSION = re.compile(r"[A-Za-z]=[^,\x00]+")  # attr-val; "m" is caught separately
_DEFINED_ATTRIBUTES = frozenset("aceinprsv")  # RFC 5802 §5.1; never valid as extensions


def _decode_message(message, what):
    if len(message) > MAX_MESSAGE_OCTETS:
        raise SaslError(f"{what} too long")
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not UTF-8") from None
    if "\0" in text:
        raise SaslError(f"{what} contains NUL")
    return text


def _attribute(part, name, what):
    """The value of `name=value`, or SaslError."""
    if not part.startswith(name + "=") or len(part) == len(name) + 1:
        raise SaslError(f"{what}: expected attribute {name!r}")
    return part[len(name) + 1 :]


def _check_extensions(parts, what):
    """Unknown extensions are ignored; "m" must fail the exchange (RFC 5802 §5.1)."""
    for part in parts:
        if part.startswith("m="):
            raise SaslError(f"{what}: mandatory extension not supported")
        if not _EXTENSION.fullmatch(part) or part[0] in _DEFINED_ATTRIBUTES:
            raise SaslError(f"{what}: malformed or misplaced attribute")


def _check_nonce(nonce, what):
    if not _PRINTABLE.fullmatch(nonce):
        raise SaslError(f"{what}: malformed nonce")
    return nonce


def _decode_saslname(saslname, what):
    """RFC 5802 §5.1: "=2C" is ",", "=3D" is "="; any other "=" fails the exchange."""
    if "=" in _ESCAPE.sub("", saslname):
        raise SaslError(f"{what}: bad escape in name")
    return saslname.replace("=2C", ",").replace("=3D", "=")


def _encode_saslname(name):
    return name.replace("=", "=3D").replace(",", "=2C")


def _prepare_username(name, what):
    """SASLprep as a query (RFC 5802 §5.1); failure or an empty result aborts."""
    try:
        prepared = saslprep(name, allow_unassigned=True)
    except ValueError as error:
        raise SaslError(f"{what}: name fails SASLprep ({error})") from None
    if not prepared:
        raise SaslError(f"{what}: empty name")
    return prepared


def _new_nonce(nonce_bytes):
    # token_urlsafe only uses A-Z a-z 0-9 - _, all within "printable".
    return secrets.token_urlsafe(nonce_bytes)


# --- SCRAM-SHA-256 server ------------------------------------------------------------


class _ServerState(enum.Enum):
    CLIENT_FIRST = enum.auto()  # waiting for client-first-message
    CLIENT_FINAL = enum.auto()  # waiting for client-final-message
    ACKNOWLEDGE = enum.auto()  # authenticated; waiting for the client's empty response
    FINISHED = enum.auto()  # step() returned None
    FAILED = enum.auto()  # step() raised SaslError


class ScramSha256Server:
    """RFC 5802 / RFC 7677 SCRAM-SHA-256, server side, without channel binding.

    Step protocol (every message already base64-decoded, every reply not yet encoded):

    1. ``step(client_first)`` returns the server-first-message ("r=...,s=...,i=...").
       `lookup(username)` is called exactly once here, with the name unescaped
       ("=2C" → ",", "=3D" → "=") and SASLprep'd as a query string. If the client
       sent no initial response, the protocol layer sends an empty challenge first
       (RFC 4422 §5) and feeds the client's reply here.
    2. ``step(client_final)`` verifies the client's proof and returns the
       server-final-message (b"v=..."). From then on `done` is True and `username`
       is the authenticated name.
    3. The server-final-message goes to the client either with the success reply
       where the protocol allows additional data (ManageSieve "OK (SASL ...)",
       RFC 5804 §2.1), and the exchange ends there; or as one more challenge
       (SMTP 334, IMAP "+", POP3 "+"), in which case the client answers with an
       empty response and ``step(b"")`` returns None: send the success reply.

    Any failure raises SaslError (bad proof, nonce mismatch, malformed or
    out-of-order attributes, "m=" extensions, a "c=" that is not the gs2 header,
    "p=" channel binding, an authzid other than the username); the exchange is then
    dead (`done` False, `username` None, even if the proof had been verified) and
    every further step() raises SaslError too. Calling step() after it returned None
    raises SaslError.

    gs2 flags "n" and "y" are accepted: "y" (the client could bind but thinks we
    cannot) is right since we never advertise SCRAM-SHA-256-PLUS. An authzid
    ("a=") is accepted only when it names the user authenticating: we do not offer
    proxy authorisation.

    An unknown user gets credentials made up from the name and a secret (the
    per-process one unless `fake_secret` is given; pass a persistent one so salts
    do not change across restarts), with `fake_iterations` matching what real users
    have, so the server-first-message looks the same and the exchange fails only
    at the proof, as for a wrong password.

    `nonce` fixes the server's nonce part (tests only, e.g. the RFC 7677 vector).
    """

    def __init__(
        self,
        lookup,
        *,
        nonce_bytes: int = 18,
        nonce: str | None = None,
        fake_iterations: int = DEFAULT_ITERATIONS,
        fake_secret: bytes | None = None,
    ):
        if nonce is not None and not _PRINTABLE.fullmatch(nonce):
            raise ValueError("server nonce must be RFC 5802 printable characters")
        if not 1 <= fake_iterations <= 2**31 - 1:
            raise ValueError(f"iteration count {fake_iterations} out of range")
        self._lookup = lookup
        self._server_nonce = nonce if nonce is not None else _new_nonce(nonce_bytes)
        self._fake_iterations = fake_iterations
        self._fake_secret = fake_secret if fake_secret is not None else _PROCESS_SECRET
        self._state = _ServerState.CLIENT_FIRST
        self._username = None
        # Set by the first step, used by the second.
        self._candidate = None
        self._credentials = None
        self._user_known = False
        self._gs2_header = None
        self._nonce = None
        self._client_first_bare = None
        self._server_first = None

    @property
    def done(self) -> bool:
        """True once the client's proof has been verified."""
        return self._state in (_ServerState.ACKNOWLEDGE, _ServerState.FINISHED)

    @property
    def username(self) -> str | None:
        """The authenticated (SASLprep'd) username; None until the proof checks out."""
        return self._username

    def step(self, message: bytes) -> bytes | None:
        """Feed one client message; return the reply to send, or None when finished."""
        handlers = {
            _ServerState.CLIENT_FIRST: self._client_first,
            _ServerState.CLIENT_FINAL: self._client_final,
            _ServerState.ACKNOWLEDGE: self._acknowledge,
        }
        handler = handlers.get(self._state)
        if handler is None:
            raise SaslError(f"exchange already {self._state.name.lower()}")
        try:
            return handler(message)
        except SaslError:
            # A failure after the proof (a non-empty acknowledgement) fails the whole
            # exchange: nobody is authenticated, whatever was verified before.
            self._state = _ServerState.FAILED
            self._username = None
            self._credentials = None
            raise

    def _client_first(self, message):
        # RFC 5802 §7: gs2-header client-first-message-bare
        text = _decode_message(message, "client-first")
        parts = text.split(",")
        if len(parts) < 4:
            raise SaslError("client-first: too few attributes")
        cbind_flag, authzid_part, reserved_or_name = parts[:3]
        if cbind_flag.startswith("p="):
            raise SaslError("client-first: channel binding requested but not offered")
        if cbind_flag not in ("n", "y"):
            raise SaslError("client-first: malformed gs2 channel binding flag")
        if reserved_or_name.startswith("m="):
            raise SaslError("client-first: mandatory extension not supported")
        username = _prepare_username(
            _decode_saslname(_attribute(reserved_or_name, "n", "client-first"), "client-first"),
            "client-first",
        )
        if authzid_part:
            authzid = _prepare_username(
                _decode_saslname(_attribute(authzid_part, "a", "client-first"), "client-first"),
                "client-first",
            )
            if authzid != username:
                raise SaslError("client-first: authorisation identity differs from username")
        client_nonce = _check_nonce(_attribute(parts[3], "r", "client-first"), "client-first")
        _check_extensions(parts[4:], "client-first")

        credentials = self._lookup(username)
        self._user_known = credentials is not None
        if credentials is None:
            credentials = self._fake_credentials(username)
        self._candidate = username
        self._credentials = credentials
        self._gs2_header = f"{cbind_flag},{authzid_part},".encode("utf-8")
        self._client_first_bare = ",".join(parts[2:]).encode("utf-8")
        self._nonce = client_nonce + self._server_nonce
        server_first = (
            f"r={self._nonce},s={_b64encode(credentials.salt)},i={credentials.iterations}"
        ).encode("ascii")
        self._server_first = server_first
        self._state = _ServerState.CLIENT_FINAL
        return server_first

    def _client_final(self, message):
        # RFC 5802 §7: channel-binding "," nonce ["," extensions] "," proof
        text = _decode_message(message, "client-final")
        without_proof, separator, proof_part = text.rpartition(",")
        parts = without_proof.split(",")
        if not separator or len(parts) < 2:
            raise SaslError("client-final: too few attributes")
        channel_binding = _b64decode(_attribute(parts[0], "c", "client-final"), "channel binding")
        nonce = _attribute(parts[1], "r", "client-final")
        _check_extensions(parts[2:], "client-final")
        proof = _b64decode(_attribute(proof_part, "p", "client-final"), "proof")

        # Without channel binding, c= carries the gs2 header alone (RFC 5802 §7 cbind-input).
        if not hmac.compare_digest(channel_binding, self._gs2_header):
            raise SaslError("client-final: channel binding does not match the gs2 header")
        if not hmac.compare_digest(nonce.encode("utf-8"), self._nonce.encode("ascii")):
            raise SaslError("client-final: nonce mismatch")
        if len(proof) != _DIGEST_OCTETS:
            raise SaslError("client-final: proof has the wrong length")

        auth_message = b",".join(
            (self._client_first_bare, self._server_first, without_proof.encode("utf-8"))
        )
        credentials = self._credentials
        client_signature = _hmac(credentials.stored_key, auth_message)
        client_key = _xor(proof, client_signature)
        proof_ok = hmac.compare_digest(_h(client_key), credentials.stored_key)
        if not (proof_ok and self._user_known):
            raise SaslError("client-final: authentication failed")  # never say which
        server_signature = _hmac(credentials.server_key, auth_message)
        self._username = self._candidate
        self._credentials = None
        self._state = _ServerState.ACKNOWLEDGE
        return b"v=" + base64.b64encode(server_signature)

    def _acknowledge(self, message):
        if message != b"":
            raise SaslError("expected an empty response after server-final")
        self._state = _ServerState.FINISHED
        return None

    def _fake_credentials(self, username):
        """Stable per (secret, username), shaped like real credentials (RFC 5802 §9)."""
        key = _hmac(self._fake_secret, b"scram-sha-256 unknown user\0" + username.encode("utf-8"))
        return ScramCredentials(
            iterations=self._fake_iterations,
            salt=_hmac(key, b"salt")[:DEFAULT_SALT_OCTETS],
            stored_key=_hmac(key, b"stored key"),
            server_key=_hmac(key, b"server key"),
        )


# --- SCRAM-SHA-256 client ------------------------------------------------------------


class _ClientState(enum.Enum):
    START = enum.auto()
    SERVER_FIRST = enum.auto()
    SERVER_FINAL = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


class ScramSha256Client:
    """RFC 5802 / RFC 7677 SCRAM-SHA-256, client side, without channel binding.

    `gs2_flag` is "n" (no channel binding support), or "y" for a client that could
    bind but saw no SCRAM-SHA-256-PLUS offered (RFC 5802 §6).

    Mirrors the server's step protocol::

        client = ScramSha256Client("user", "pencil")
        response = client.start()                  # client-first-message
        while (challenge := server.step(response)) is not None:
            response = client.step(challenge)      # client-final, then b""

    `step(server_first)` returns the client-final-message; `step(server_final)`
    verifies the server's signature (mutual authentication), sets `done`, and
    returns b"", the empty response SMTP/IMAP/POP3 expect after a final challenge.
    A server that sends its final message with the success reply instead: feed it
    to `step()` all the same and ignore the b"". Failures raise SaslError, including
    a server "e=" error, an iteration count above `max_iterations`, and a server
    nonce that does not extend ours.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        authzid: str | None = None,
        nonce: str | None = None,
        nonce_bytes: int = 18,
        max_iterations: int = MAX_CLIENT_ITERATIONS,
        gs2_flag: str = "n",
    ):
        if gs2_flag not in ("n", "y"):
            raise ValueError("gs2_flag must be 'n' or 'y'; channel binding is not implemented")
        try:
            username = saslprep(username, allow_unassigned=True)
        except ValueError as error:
            raise ValueError(f"username fails SASLprep ({error})") from None
        if not username:
            raise ValueError("empty username")
        _prepare_password(password)  # fail now, not after a round trip
        if nonce is not None and not _PRINTABLE.fullmatch(nonce):
            raise ValueError("client nonce must be RFC 5802 printable characters")
        authzid_part = f"a={_encode_saslname(saslprep(authzid, allow_unassigned=True))}" if authzid else ""
        self._gs2_header = f"{gs2_flag},{authzid_part},"
        self._username = username
        self._password = password
        self._client_nonce = nonce if nonce is not None else _new_nonce(nonce_bytes)
        self._max_iterations = max_iterations
        self._state = _ClientState.START
        self._client_first_bare = None
        self._auth_message = None
        self._server_key = None

    @property
    def done(self) -> bool:
        """True once the server has proved it knows our credentials."""
        return self._state is _ClientState.DONE

    def start(self) -> bytes:
        """The client-first-message (the initial response)."""
        if self._state is not _ClientState.START:
            raise SaslError("exchange already started")
        self._client_first_bare = f"n={_encode_saslname(self._username)},r={self._client_nonce}"
        self._state = _ClientState.SERVER_FIRST
        return (self._gs2_header + self._client_first_bare).encode("utf-8")

    def step(self, message: bytes) -> bytes:
        """Feed one server message; return the response to send."""
        handlers = {
            _ClientState.SERVER_FIRST: self._server_first,
            _ClientState.SERVER_FINAL: self._server_final,
        }
        handler = handlers.get(self._state)
        if handler is None:
            raise SaslError(f"client not expecting a server message ({self._state.name.lower()})")
        try:
            return handler(message)
        except SaslError:
            self._state = _ClientState.FAILED
            raise

    def _server_first(self, message):
        # RFC 5802 §7: [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
        text = _decode_message(message, "server-first")
        parts = text.split(",")
        if parts[0].startswith("m="):
            raise SaslError("server-first: mandatory extension not supported")
        if len(parts) < 3:
            raise SaslError("server-first: too few attributes")
        nonce = _check_nonce(_attribute(parts[0], "r", "server-first"), "server-first")
        salt = _b64decode(_attribute(parts[1], "s", "server-first"), "salt")
        iterations_text = _attribute(parts[2], "i", "server-first")
        _check_extensions(parts[3:], "server-first")
        if not nonce.startswith(self._client_nonce) or len(nonce) == len(self._client_nonce):
            raise SaslError("server-first: nonce does not extend the client nonce")
        if not salt:
            raise SaslError("server-first: empty salt")
        if not re.fullmatch(r"[1-9][0-9]{0,9}", iterations_text):
            raise SaslError("server-first: malformed iteration count")
        iterations = int(iterations_text)
        if iterations > self._max_iterations:
            raise SaslError(f"server-first: iteration count {iterations} above our limit")

        salted_password = _salted_password(self._password, salt, iterations)
        client_key = _hmac(salted_password, b"Client Key")
        without_proof = f"c={_b64encode(self._gs2_header.encode('utf-8'))},r={nonce}"
        self._auth_message = b",".join(
            (self._client_first_bare.encode("utf-8"), message, without_proof.encode("utf-8"))
        )
        client_signature = _hmac(_h(client_key), self._auth_message)
        proof = _xor(client_key, client_signature)
        self._server_key = _hmac(salted_password, b"Server Key")
        self._state = _ClientState.SERVER_FINAL
        return f"{without_proof},p={_b64encode(proof)}".encode("ascii")

    def _server_final(self, message):
        # RFC 5802 §7: (server-error / verifier) ["," extensions]
        text = _decode_message(message, "server-final")
        parts = text.split(",")
        if parts[0].startswith("e="):
            raise SaslError(f"server-final: server reported {parts[0][2:]!r}")
        verifier = _b64decode(_attribute(parts[0], "v", "server-final"), "verifier")
        _check_extensions(parts[1:], "server-final")
        expected = _hmac(self._server_key, self._auth_message)
        if not hmac.compare_digest(verifier, expected):
            raise SaslError("server-final: server signature does not match")
        self._state = _ClientState.DONE
        return b""

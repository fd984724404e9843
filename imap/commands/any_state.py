"""Commands valid in any state (RFC 9051 §6.1) and the authenticated-state extras
that do not touch a mailbox: ENABLE, COMPRESS, NAMESPACE, IDLE."""
from imap.capabilities import capability_names
from imap.responses import nstring, paren, quoted
from imap.session import ANSWERED, Bad, No, State

# RFC 2971 §3.3: what we tell a client about ourselves.
SERVER_ID = (("name", "mailsuite"), ("vendor", "mailsuite"), ("support-url", None))


async def capability(session, command):  # RFC 9051 §6.1.1
    session.send(b"* CAPABILITY " + " ".join(capability_names(session)).encode() + b"\r\n")


async def noop(session, command):  # RFC 9051 §6.1.2: updates are sent by the session
    return None


async def logout(session, command):  # RFC 9051 §6.1.3
    session.send(b"* BYE mailsuite IMAP signing off\r\n")
    session.state = State.LOGOUT


async def id_(session, command):  # RFC 2971
    session.client_id = dict(command.parameters or ())
    fields = [quoted(k) + b" " + nstring(v) for k, v in SERVER_ID if v is not None]
    session.send(b"* ID " + paren(fields) + b"\r\n")


# RFC 5161 §3.1: what ENABLE can turn on here.
_ENABLEABLE = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2")


async def enable(session, command):  # RFC 5161
    newly = []
    for name in command.capabilities:
        if name not in _ENABLEABLE:
            continue  # unknown ones are ignored (RFC 5161 §3.1)
        canonical = "IMAP4rev2" if name == "IMAP4REV2" else name
        if canonical not in session.enabled:
            session.enabled.add(canonical)
            newly.append(canonical)
        if canonical == "QRESYNC":  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
            session.enabled.add("CONDSTORE")
    if "CONDSTORE" in session.enabled:
        session.condstore = True
    session.send(b"* ENABLED" + b"".join(b" " + n.encode() for n in newly) + b"\r\n")


async def compress(session, command):  # RFC 4978 §3
    if command.mechanism != "DEFLATE":
        raise Bad("Unknown compression mechanism")
    if session.connection.compressed:
        raise No("Compression already active", "COMPRESSIONACTIVE")
    session.send(b"%s OK DEFLATE active\r\n" % command.tag.encode())
    await session.flush()
    session.connection.start_compress()
    return ANSWERED


async def namespace(session, command):  # RFC 2342, RFC 9051 §6.3.10
    session.send(b'* NAMESPACE (("" "/")) NIL NIL\r\n')


async def idle(session, command):  # RFC 2177, RFC 9051 §6.3.13
    await session.idle()
    return (None, "IDLE terminated")


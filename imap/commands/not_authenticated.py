"""Commands of the not-authenticated state: STARTTLS, LOGIN, AUTHENTICATE (RFC 9051 §6.2).

Password checks, throttling and the login audit are the shared ones in accounts.auth;
the SCRAM exchange is mta.submission's, with "imap" as the audited service.
"""
from accounts.auth import authenticate as check_password_login
from accounts.auth import ScramExchange
from accounts.errors import LoginThrottled
from imap.capabilities import capability_names
from imap.session import ANSWERED, Bad, No
from mailsuite.lib import sasl
from mailsuite.lib.aio import run_sync, run_write

SERVICE = "imap"
THROTTLED = ("Too many failed logins; try again later", "UNAVAILABLE")
FAILED = ("Authentication failed", "AUTHENTICATIONFAILED")


async def starttls(session, command):  # RFC 9051 §6.2.1
    if session.connection.tls:
        raise Bad("TLS is already active")
    if session.service.tls is None:
        raise No("TLS is not available")
    session.send(b"%s OK Begin TLS negotiation now\r\n" % command.tag.encode())
    await session.flush()
    await session.connection.start_tls(session.service.tls.current())
    return ANSWERED


def _require_privacy(session):
    if not session.login_allowed:
        raise No("Use STARTTLS before logging in", "PRIVACYREQUIRED")


async def _logged_in(session, account):
    session.enter_account(account)
    return ("CAPABILITY " + " ".join(capability_names(session)), "Logged in")


async def login(session, command):  # RFC 9051 §6.2.3
    _require_privacy(session)
    try:
        account = await run_write(check_password_login, command.userid, command.password, service=SERVICE, remote_ip=session.peer
        )
    except LoginThrottled:
        raise No(*THROTTLED) from None
    if account is None:
        raise No(*FAILED)
    return await _logged_in(session, account)


async def authenticate(session, command):  # RFC 9051 §6.2.2, RFC 4959 SASL-IR
    _require_privacy(session)
    mechanism = _MECHANISMS.get(command.mechanism)
    if mechanism is None:
        raise No("Unsupported authentication mechanism")
    try:
        account = await mechanism(session, command.initial_response)
    except sasl.SaslAborted:
        raise Bad("Authentication cancelled") from None
    except sasl.SaslError:
        raise No(*FAILED) from None
    except LoginThrottled:
        raise No(*THROTTLED) from None
    if account is None:
        raise No(*FAILED)
    return await _logged_in(session, account)


async def _challenge(session, challenge: bytes) -> bytes:
    session.send(b"+ " + sasl.encode_challenge(challenge) + b"\r\n")
    await session.flush()
    return sasl.decode_response(await session.read_line())


async def _plain(session, initial):
    response = initial if initial is not None else await _challenge(session, b"")
    authzid, username, password = sasl.decode_plain(response)
    if authzid and authzid != username:
        raise sasl.SaslError("proxy authorisation is not offered")
    return await run_write(check_password_login, username, password, service=SERVICE, remote_ip=session.peer)


async def _login(session, initial):
    user_prompt, password_prompt = sasl.login_challenges()
    username = initial if initial is not None else await _challenge(session, user_prompt)
    password = await _challenge(session, password_prompt)
    try:
        username, password = username.decode("utf-8"), password.decode("utf-8")
    except UnicodeDecodeError:
        raise sasl.SaslError("LOGIN credentials are not UTF-8") from None
    return await run_write(check_password_login, username, password, service=SERVICE, remote_ip=session.peer)


async def _scram(session, initial):
    exchange = ScramExchange(remote_ip=session.peer, service=SERVICE)
    message = initial if initial is not None else await _challenge(session, b"")
    while True:
        reply = await run_write(exchange.step, message)
        if reply is None:
            break
        message = await _challenge(session, reply)
    return await run_write(exchange.login)


_MECHANISMS = {"PLAIN": _plain, "LOGIN": _login, "SCRAM-SHA-256": _scram}

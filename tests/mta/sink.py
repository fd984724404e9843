"""Receiving SMTP servers for outbound-delivery tests, on loopback addresses (127.0.0.2, …).

A Sink records what it was sent and answers as told: a reply per recipient, a reply
to DATA, STARTTLS, AUTH, SMTPUTF8 or not.
"""
import asyncio
import socket
import threading
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    data: bytes
    mail_options: list
    tls: bool
    login: str | None


@dataclass
class Behaviour:
    rcpt_replies: dict = field(default_factory=dict)  # address -> reply
    data_reply: str = "250 2.0.0 Ok: stored"
    pipelining: bool = True
    smtputf8: bool = True
    rcpt_delay: float = 0.0  # seconds to wait before answering RCPT


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        lines = responses[:-1]
        if self.sink.behaviour.pipelining:
            lines.append("250-PIPELINING")
        return [*lines, "250 HELP"]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.sink.behaviour.rcpt_delay:
            await asyncio.sleep(self.sink.behaviour.rcpt_delay)
        reply = self.sink.behaviour.rcpt_replies.get(address)
        if reply and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        reply = self.sink.behaviour.data_reply
        if reply.startswith("2"):
            login = session.login_data.decode() if isinstance(session.login_data, bytes) else session.login_data
            self.sink.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                         list(envelope.mail_options), session.ssl is not None, login)
            )
        return reply


class Sink:
    def __init__(self, host, port, *, tls_context=None, users=None, behaviour=None):
        self.host, self.port = host, port
        self.tls_context = tls_context
        self.users = users  # {username: password} to require AUTH
        self.behaviour = behaviour or Behaviour()
        self.received = []
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    def _protocol(self):
        self.connections += 1
        return SMTP(
            _Handler(self),
            hostname=f"sink-{self.host}",
            enable_SMTPUTF8=self.behaviour.smtputf8,
            tls_context=self.tls_context,
            authenticator=self._authenticate if self.users else None,
            auth_required=bool(self.users),
            auth_require_tls=bool(self.tls_context),
        )

    async def _start(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.server = await self.loop.create_server(self._protocol, sock=sock)

    def __enter__(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        async def stop():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

"""The POP3 server: asyncio transports, line framing, STLS and implicit TLS (POP3S).

Implementation notes
--------------------
- The transport is mailsuite.lib.lineserver's (line framing, flow control, STARTTLS,
  connection caps); this module says what is POP3 about it. A line over the limit is
  answered "-ERR Line too long" by the session.
- STLS (RFC 2595 §4): the "+OK" is written and the TLS handshake started with no
  await in between, and anything the client sent after STLS is discarded, so no
  plaintext can be taken for commands sent inside TLS.
- POP3S (RFC 8314 §3.3): the listener hands each handshake the current certificate
  (mailsuite.lib.tls.TLSContextProvider); STLS uses it too. Renewed certificates need
  no restart.
- Bounded: connections per process and per client IP (refused with "-ERR [SYS/TEMP]"),
  handshake time, idle time (the session's autologout), time a client may take to
  read our replies.
- close() stops listening and ends every session; each gives up its maildrop lock.
"""
from dataclasses import dataclass

from mailsuite.lib import lineserver
from pop3.responses import err
from pop3.session import Options, Session


class Connection(lineserver.LineConnection):
    """The channel a Session talks through (see Session's docstring)."""

    def refusal(self, reason):
        return err(reason, "SYS/TEMP")


@dataclass
class Listener(lineserver.Listener):
    name: str = "pop3"


class POP3Service(lineserver.LineService):
    """The listening sockets of one kind of POP3 port: STLS (`implicit_tls` False) or POP3S.

    `tls` is a TLSContextProvider, or None for a server without TLS (then USER/PASS is
    never offered except to loopback clients when `plaintext_loopback` is on).
    """

    protocol = "pop3"
    connection_class = Connection

    def __init__(
        self, *, hostname, tls=None, implicit_tls=False, plaintext_loopback=False, login_delay=0,
        autologout=600.0, max_connections=1000, max_connections_per_ip=50, open_per_ip=None,
    ):
        if implicit_tls and tls is None:
            raise ValueError("an implicit-TLS port needs TLS")
        super().__init__(
            tls=tls, max_connections=max_connections, max_connections_per_ip=max_connections_per_ip,
            open_per_ip=open_per_ip,
        )
        self.implicit_tls = implicit_tls
        self.hostname = hostname
        self.plaintext_loopback = plaintext_loopback
        self.login_delay = login_delay
        self.autologout = autologout

    def session_for(self, connection):
        return Session(connection, Options(
            hostname=self.hostname, autologout=self.autologout, login_delay=self.login_delay,
            plaintext_loopback=self.plaintext_loopback,
        ))

    def listener_ssl(self):
        return self.tls.listener_context() if self.implicit_tls else None

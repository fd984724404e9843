"""The ManageSieve server (RFC 5804): asyncio transports, line and literal framing, STARTTLS.

Implementation notes
--------------------
- The transport is mailsuite.lib.lineserver's (line and literal framing, flow control,
  STARTTLS, connection caps); this module says what is ManageSieve about it. A line
  over the limit is answered NO by the session.
- STARTTLS (RFC 5804 §2.2): the OK is written and the handshake started with no
  command read in between, and whatever the client sent after STARTTLS in plaintext
  is discarded, so nothing sent before TLS can pass for a command sent inside it.
  The certificate is the current one of mailsuite.lib.tls.TLSContextProvider.
- Bounded: connections per process and per client IP, handshake time, idle time (the
  session's timers), time a client may take to read our replies.
- close() stops listening and ends every session.
"""
from dataclasses import dataclass

from mailsuite.lib import lineserver
from sieve.protocol import bye
from sieve.session import Options, Session


class Connection(lineserver.LineConnection):
    """The channel a Session talks through (see Session's docstring)."""

    max_buffered = 512 * 1024  # scripts arrive as literals of up to 256 KiB

    def refusal(self, reason):
        return bye(reason, "TRYLATER")


@dataclass
class Listener(lineserver.Listener):
    name: str = "managesieve"


class ManageSieveService(lineserver.LineService):
    """The listening socket(s) of the ManageSieve port. `tls` is a TLSContextProvider
    (STARTTLS), or None for a server without TLS (logins then only from loopback clients
    when `plaintext_loopback` is on)."""

    protocol = "managesieve"
    connection_class = Connection

    def __init__(self, *, hostname, tls=None, plaintext_loopback=False, max_connections=1000,
                 max_connections_per_ip=20, autologout=30 * 60.0, preauth_timeout=120.0):
        super().__init__(tls=tls, max_connections=max_connections, max_connections_per_ip=max_connections_per_ip)
        self.options = Options(
            hostname=hostname, autologout=autologout, preauth_timeout=preauth_timeout,
            plaintext_loopback=plaintext_loopback,
        )

    def session_for(self, connection):
        return Session(connection, self.options)

    def farewell(self):
        return bye("Server shutting down", "TRYLATER")

"""Small network pieces shared by the protocol servers."""
import ipaddress
import socket


def is_loopback(ip) -> bool:
    """True for 127.0.0.0/8 and ::1 (also IPv4-mapped); False for anything unparsable."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def listening_socket(host, port, *, reuse_port=False):
    """A bound, non-blocking TCP socket for asyncio's create_server/start_server.

    proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do,
    and with Nagle on, a multi-line reply stalls on the client's delayed ACK (~40 ms).
    `reuse_port` lets several worker processes share the port (SO_REUSEPORT).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock

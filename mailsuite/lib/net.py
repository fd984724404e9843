"""Small facts about network peers, shared by the protocol servers."""
import ipaddress


def is_loopback(ip) -> bool:
    """True for 127.0.0.0/8 and ::1 (also IPv4-mapped); False for anything unparsable."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback

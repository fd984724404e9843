"""Strict readers for configuration from environment variables.

Every helper raises ImproperlyConfigured naming the variable when its value is
malformed, so a typo stops the server at start instead of running with a
silently different setting.
"""
import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured

from mailsuite.lib.sizes import SizeError, parse_size

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name):
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name, default=""):
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name, default=False):
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: expected one of 1/0, true/false, yes/no, on/off")


def env_int(name, default, *, minimum=None, maximum=None):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: expected an integer") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number}: must be between {minimum} and {maximum}")
    return number


def env_port(name, default):
    return env_int(name, default, minimum=0, maximum=65535)


def env_bytes(name, default):
    """A size such as 25M or 1G (binary units)."""
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return parse_size(value)
    except SizeError as error:
        raise ImproperlyConfigured(f"{name}={value!r}: {error}") from None


def env_networks(name):
    """A comma-separated list of CIDRs, e.g. 10.0.0.0/8,2001:db8::/32."""
    value = _raw(name) or ""
    networks = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP network") from None
    return tuple(networks)


def env_ips(name):
    """A comma-separated list of IP addresses, e.g. 192.0.2.25,2001:db8::25 (as strings)."""
    result = []
    for item in filter(None, (part.strip() for part in (_raw(name) or "").split(","))):
        try:
            result.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP address") from None
    return tuple(result)


def env_hostports(name, default_port):
    """A comma-separated list of ip[:port] (IPv6 as [addr]:port)."""
    value = _raw(name) or ""
    result = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, port = item, default_port
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                port = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            ipaddress.ip_address(host)
            port = int(port)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not ip[:port]") from None
        result.append((host, port))
    return tuple(result)



def _domain_name(name, item):
    item = item.strip().rstrip(".").lower()
    labels = item.split(".")
    if not item or len(item) > 253 or not all(
        label and len(label) < 64 and label.replace("-", "").replace("_", "").isalnum() for label in labels
    ):
        raise ImproperlyConfigured(f"{name}: {item!r} is not a domain name")
    return item


def env_domains(name):
    """A comma-separated list of domain names, lower-cased, e.g. lists.example.org,forwarder.example."""
    return tuple(_domain_name(name, item) for item in (_raw(name) or "").split(",") if item.strip())


def env_weighted_domains(name, default_weight):
    """A comma-separated list of DOMAIN[:WEIGHT] (a number), e.g. bl.example:10,rbl.example:2.5."""
    result = []
    for item in filter(None, (part.strip() for part in (_raw(name) or "").split(","))):
        domain, _, weight = item.partition(":")
        try:
            number = float(weight) if weight else float(default_weight)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r}: the weight must be a number") from None
        result.append((_domain_name(name, domain), number))
    return tuple(result)

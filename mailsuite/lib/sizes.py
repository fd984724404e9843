"""Byte sizes as operators write them: 500M, 1G, 2048, 1.5G, 0."""
import re

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)(?:I?B)?", re.IGNORECASE)


class SizeError(ValueError):
    pass


def parse_size(text):
    """Return the number of bytes in `text`; units are binary (1K = 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise SizeError(f"{text!r} is not a size (examples: 500M, 2G, 1048576)")
    number = float(match["number"]) * _UNITS[match["unit"].upper()]
    if number != int(number):
        raise SizeError(f"{text!r} is not a whole number of bytes")
    return int(number)


def format_size(size):
    """The shortest exact-or-one-decimal human form: 1.5G, 500M, 312K, 17B."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if size >= scale:
            value = size / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"

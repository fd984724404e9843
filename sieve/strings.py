"""String handling shared by the compiler and the interpreter: encoded characters
(RFC 5228 §2.4.2.4) and variable references (RFC 5229 §3). Pure."""
import re

_ENCODED = re.compile(r"\$\{(hex|unicode):([^}]*)\}", re.IGNORECASE)
_HEX_PAIRS = re.compile(r"[ \t\r\n]*([0-9A-Fa-f]{2}[ \t\r\n]*)+")
_UNICODE_SEQ = re.compile(r"[ \t\r\n]*([0-9A-Fa-f]{1,6}[ \t\r\n]*)+")


def decode_encoded_characters(text):
    """Replace ${hex:…} and ${unicode:…}; raises ValueError for a value that is no character.

    A sequence that is not well formed stays as it is (RFC 5228 §2.4.2.4).
    """
    if "${" not in text:
        return text

    def replace(match):
        kind, body = match.group(1).lower(), match.group(2)
        if kind == "hex":
            if not _HEX_PAIRS.fullmatch(body):
                return match.group(0)
            data = bytes(int(pair, 16) for run in body.split() for pair in _pairs(run))
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("${hex:…} does not encode UTF-8 text") from None
        if not _UNICODE_SEQ.fullmatch(body):
            return match.group(0)
        chars = []
        for value in (int(h, 16) for h in body.split()):
            if not (0 <= value <= 0xD7FF or 0xE000 <= value <= 0x10FFFF):
                raise ValueError(f"${{unicode:{value:X}}} is not a character")
            chars.append(chr(value))
        return "".join(chars)

    return _ENCODED.sub(replace, text)


def _pairs(run):
    return [run[i : i + 2] for i in range(0, len(run), 2)]


# RFC 5229 §3: "${" identifier *("." identifier) "}" or "${" digits "}".
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|[0-9]+)\}")


def expand(text, lookup):
    """`text` with each variable reference replaced by lookup(name) (lower-cased name;
    digits for match variables). Expansion is not recursive (RFC 5229 §3)."""
    if "${" not in text:
        return text
    return REFERENCE.sub(lambda m: lookup(m.group(1).lower()), text)


def quote_wildcards(text):
    """RFC 5229 §4.1 :quotewildcard: make `text` match itself literally under :matches."""
    return re.sub(r"([*?\\])", r"\\\1", text)


def quote_regex(text):
    """draft-ietf-sieve-regex §5 :quoteregex."""
    return re.sub(r"([\\^$.\[\]|()?*+{}])", r"\\\1", text)

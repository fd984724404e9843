"""A small synchronous ManageSieve client (RFC 5804): what the tests drive the server
with, and a reference for scripts that upload filters.

    with ManageSieveClient("127.0.0.1", 4190) as client:
        client.starttls(context)
        client.authenticate_plain("alice@example.org", password)
        client.putscript("main", text)
        client.setactive("main")
"""
import base64
import re
import socket
import ssl
from dataclasses import dataclass, field

_LITERAL = re.compile(rb"\{([0-9]+)\+?\}\r\n\Z")


class ManageSieveError(Exception):
    def __init__(self, response):
        super().__init__(f"{response.kind} {response.code or ''} {response.text}".strip())
        self.response = response


@dataclass
class Response:
    kind: str  # OK, NO or BYE
    code: str = ""
    text: str = ""
    lines: list = field(default_factory=list)  # the data lines before it, each a list of strings/words


def quote(text):
    """A string argument: quoted when it can be, else a non-synchronizing literal."""
    if len(text) < 1024 and not any(c in text for c in '\r\n\x00'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    data = text.encode("utf-8")
    return "{%d+}\r\n%s" % (len(data), text)


class ManageSieveClient:
    def __init__(self, host, port, *, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.capabilities = self._capabilities(self.read_response())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # --- Reading ---------------------------------------------------------------------------

    def _read_line(self):
        line = self.file.readline()
        if not line:
            raise EOFError("the server closed the connection")
        return line

    def _tokens(self, line):
        """Words and strings of one response line (reading literals as they come)."""
        tokens = []
        while True:
            literal = _LITERAL.search(line)
            head = line[: literal.start()] if literal else line.rstrip(b"\r\n")
            tokens += _split(head.decode("utf-8"))
            if not literal:
                return tokens
            data = self.file.read(int(literal.group(1)))
            tokens.append(data.decode("utf-8"))
            line = self._read_line()

    def read_response(self):
        lines = []
        while True:
            tokens = self._tokens(self._read_line())
            if tokens and tokens[0] in ("OK", "NO", "BYE"):
                kind, rest = tokens[0], tokens[1:]
                code = ""
                if rest and rest[0].startswith("("):
                    code = rest.pop(0)[1:-1]
                return Response(kind, code, rest[0] if rest else "", lines)
            lines.append(tokens)

    def command(self, *parts, check=True):
        self.sock.sendall((" ".join(parts) + "\r\n").encode("utf-8"))
        response = self.read_response()
        if check and response.kind != "OK":
            raise ManageSieveError(response)
        return response

    @staticmethod
    def _capabilities(response):
        return {line[0].upper(): (line[1] if len(line) > 1 else "") for line in response.lines if line}

    # --- Commands --------------------------------------------------------------------------

    def capability(self):
        self.capabilities = self._capabilities(self.command("CAPABILITY"))
        return self.capabilities

    def starttls(self, context=None, server_hostname="localhost"):
        self.command("STARTTLS")
        context = context or ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.file = self.sock.makefile("rb")
        self.capabilities = self._capabilities(self.read_response())

    def authenticate_plain(self, user, password, *, check=True):
        token = base64.b64encode(f"\0{user}\0{password}".encode("utf-8")).decode("ascii")
        return self.command("AUTHENTICATE", '"PLAIN"', quote(token), check=check)

    def putscript(self, name, text, *, check=True):
        return self.command("PUTSCRIPT", quote(name), quote(text), check=check)

    def checkscript(self, text, *, check=True):
        return self.command("CHECKSCRIPT", quote(text), check=check)

    def listscripts(self):
        """[(name, active)]"""
        return [(line[0], len(line) > 1 and line[1] == "ACTIVE") for line in self.command("LISTSCRIPTS").lines]

    def setactive(self, name, *, check=True):
        return self.command("SETACTIVE", quote(name), check=check)

    def getscript(self, name):
        [[text]] = self.command("GETSCRIPT", quote(name)).lines
        return text

    def deletescript(self, name, *, check=True):
        return self.command("DELETESCRIPT", quote(name), check=check)

    def renamescript(self, old, new, *, check=True):
        return self.command("RENAMESCRIPT", quote(old), quote(new), check=check)

    def havespace(self, name, size, *, check=True):
        return self.command("HAVESPACE", quote(name), str(size), check=check)

    def logout(self):
        return self.command("LOGOUT")


def _split(text):
    """Words, quoted strings (unescaped) and parenthesised codes of a line."""
    tokens, i = [], 0
    while i < len(text):
        char = text[i]
        if char == " ":
            i += 1
        elif char == '"':
            out, i = [], i + 1
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                out.append(text[i])
                i += 1
            tokens.append("".join(out))
            i += 1
        elif char == "(":
            depth, start = 0, i
            while True:
                if text[i] == '"':
                    i = text.index('"', i + 1)
                elif text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            tokens.append(text[start : i + 1])
            i += 1
        else:
            end = text.find(" ", i)
            end = len(text) if end < 0 else end
            tokens.append(text[i:end])
            i = end
    return tokens

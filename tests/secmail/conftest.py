"""secmail fixtures: a throwaway CA and S/MIME certificates made with cryptography, the real
`openssl` and `gpg` binaries as the independent tools, and a cheap scrypt for sealing."""
import datetime
import os
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    from secmail import sealing

    monkeypatch.setattr(sealing, "SCRYPT_LOG2_N", 10)


@pytest.fixture(autouse=True)
def no_system_roots(monkeypatch, tmp_path):
    """Verification trusts only the CAs a test names: an empty system store."""
    from secmail import smime

    empty = tmp_path / "no-roots.pem"
    empty.write_text("")
    monkeypatch.setattr(smime, "SYSTEM_TRUST_FILE", str(empty))


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class CA:
    """A root CA issuing S/MIME certificates; `.pem` for openssl's -CAfile."""

    _keys = []  # RSA key generation is slow: a few keys are reused across the session

    def __init__(self, name="Test Root CA"):
        self.key = self.new_key()
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=10)).not_valid_after(NOW + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def new_key(cls):
        if len(cls._keys) < 6:
            cls._keys.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
            return cls._keys[-1]
        cls._keys.append(cls._keys.pop(0))
        return cls._keys[-1]

    def issue(self, address, *, cn=None, key=None, not_before=None, not_after=None, eku=ExtendedKeyUsageOID.EMAIL_PROTECTION,
              extensions=()):
        key = key or self.new_key()
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn or address)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
            .not_valid_after(not_after or NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        for extension in extensions:  # e.g. CRL distribution points, authorityInfoAccess
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


@pytest.fixture(scope="session")
def ca():
    return CA()


def pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def openssl(*args, input=None, check=True):
    done = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done


@pytest.fixture
def files(tmp_path):
    """write(name, bytes) -> path, for the command-line tools."""
    def write(name, data):
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(path)
    return write


class GpgCli:
    """The gpg command line in a home of its own: the independent OpenPGP implementation."""

    def __init__(self):
        import tempfile

        self.home = tempfile.mkdtemp(prefix="gpgtest-")  # short: gpg-agent's socket lives here
        with open(f"{self.home}/gpg-agent.conf", "w") as f:
            f.write("s2k-count 65536\n")  # protected test keys in milliseconds, not seconds

    def __call__(self, *args, input=None, check=True):
        done = subprocess.run(["gpg", "--homedir", self.home, "--batch", "--yes", "--pinentry-mode", "loopback",
                               "--passphrase", "", *args], input=input, capture_output=True, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done

    def new_key(self, address, *, name="", when=None, expire="2y"):
        """A new Ed25519/Curve25519 key; `when` fakes the clock (an expired key). The faked
        clock stands still ("!"): a running one starts again at `when` in the second call, so
        on a busy machine the subkey could be older than its key ("Time conflict")."""
        fake = ["--faked-system-time", f"{when}!"] if when else []
        uid = f"{name} <{address}>" if name else f"<{address}>"
        self(*fake, "--quick-gen-key", uid, "ed25519", "sign", expire)
        fpr = self.fingerprint(address)
        self(*fake, "--quick-add-key", fpr, "cv25519", "encr", expire)
        return fpr

    def fingerprint(self, address):
        out = self("--with-colons", "--list-keys", f"<{address}>").stdout.decode()
        return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")][0]

    def public(self, fpr):
        return self("--armor", "--export", fpr).stdout.decode()

    def secret(self, fpr):
        return self("--armor", "--export-secret-keys", fpr).stdout.decode()

    def close(self):
        import shutil

        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def gpg():
    cli = GpgCli()
    yield cli
    cli.close()


class LoopbackWeb:
    """A small HTTP server on a loopback address standing in for a CA's CRL/OCSP server or
    a domain's Web Key Directory. `routes` maps a path (without the query) to bytes or to
    a function (request body) -> bytes; other paths get 404. `requests` records
    (method, path with query) of every request; `stall` makes every answer wait that long."""

    def __init__(self, host="127.0.0.2"):
        import http.server
        import threading

        web = self
        self.routes, self.requests, self.stall = {}, [], 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body=b""):
                web.requests.append((self.command, self.path))
                if web.stall:
                    import time

                    time.sleep(web.stall)
                route = web.routes.get(self.path.split("?", 1)[0])
                data = route(body) if callable(route) else route
                try:
                    if data is None:
                        self.send_error(404)
                        return
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting (a timeout test)
                    pass

            def do_GET(self):
                self._answer()

            def do_POST(self):
                self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web():
    server = LoopbackWeb()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def empty_cache():
    """Fetched CRLs, OCSP answers and WKD misses are cached: each test starts without them."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def wkd_direct_only(monkeypatch):
    """WKD lookups in tests go only where a test points DIRECT_URL (ADVANCED_URL would ask
    openpgpkey.DOMAIN of the real DNS); test_wkd sets both to check the order."""
    from secmail import wkd

    monkeypatch.setattr(wkd, "ADVANCED_URL", "")

"""TLS certificates and server contexts.

With no MAILSUITE_TLS_CERT/KEY configured, a self-signed pair for the hostname is
generated into the data dir on first start; operators replace it with a real one.
"""
import datetime
import fcntl
import ipaddress
import logging
import os
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)


def ensure_certificate(cert_path, key_path, hostname):
    """Create a self-signed pair at the paths unless both exist. Returns True if created.

    Safe when several daemons start at once on a new data dir (runmail): one makes the
    pair under a lock while the others wait, and each file appears whole (written
    beside, then renamed), so nobody loads a key that does not match the certificate.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    if cert_path.exists() and key_path.exists():
        return False
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    with open(cert_path.parent / ".tls-create.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cert_path.exists() and key_path.exists():
            return False
        _create_pair(cert_path, key_path, hostname)
    return True


def _create_pair(cert_path, key_path, hostname):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    partial_key = key_path.with_name(key_path.name + ".new")
    fd = os.open(partial_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    partial_cert = cert_path.with_name(cert_path.name + ".new")
    partial_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # Key first: a certificate on disk always has its key there already.
    os.replace(partial_key, key_path)
    os.replace(partial_cert, cert_path)


def server_context(cert_path, key_path):
    """A server-side context: TLS 1.2 minimum, the library's modern cipher defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


# How often a provider looks at its certificate files (a seam: tests set it to 0).
RELOAD_CHECK_SECONDS = 5.0


class TLSContextProvider:
    """The current server context for a certificate pair, reloaded when its files change.

    current() is cheap: it looks at the files' modification times at most every
    `check_interval` seconds. A renewed certificate (certbot, an operator's copy) is
    used for new connections without a restart; if the new files do not load (half
    written, mismatched key) the previous context stays in use and the error is logged.
    """

    def __init__(self, cert_path, key_path, *, check_interval=None, clock=time.monotonic):
        self.cert_path, self.key_path = str(cert_path), str(key_path)
        self.check_interval = RELOAD_CHECK_SECONDS if check_interval is None else check_interval
        self.clock = clock
        self._stamp = self._file_stamp()
        self._context = server_context(self.cert_path, self.key_path)
        self._checked = clock()

    def _file_stamp(self):
        return tuple((os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in (self.cert_path, self.key_path))

    def current(self):
        now = self.clock()
        if now - self._checked >= self.check_interval:
            self._checked = now
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._context = server_context(self.cert_path, self.key_path)
                    self._stamp = stamp
                    log.info("TLS certificate reloaded from %s", self.cert_path)
            except (OSError, ssl.SSLError):
                log.exception("could not reload the TLS certificate; keeping the previous one")
        return self._context

    def listener_context(self):
        """A context for an implicit-TLS listener that hands each handshake the current
        context (the server socket keeps the context it was created with)."""
        context = server_context(self.cert_path, self.key_path)

        def use_current(ssl_object, server_name, _context):
            ssl_object.context = self.current()

        context.sni_callback = use_current
        return context


def certificate_info(cert_path):
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in san]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "san": names,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "self_signed": cert.subject == cert.issuer,
    }

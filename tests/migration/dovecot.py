"""Debian's Dovecot as a throwaway IMAP server on a free loopback port: the "other server"
that migration and external-account tests copy from.

One instance per use, in its own directory: passwd-file users with {PLAIN} passwords,
Maildir under each home, plaintext logins on loopback, no TLS. Only the master process
started here is ever signalled.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.helpers import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USERS = {"dana": "dana-secret", "erin": "erin-secret"}

CONF = """\
base_dir = {base}/run
state_dir = {base}/state
instance_name = mailsuite-test-{port}
log_path = {base}/log/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
last_valid_uid = 0
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {base}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {base}/users
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service imap-urlauth-login {{
  inet_listener imap-urlauth {{
    port = 0
  }}
}}
"""


def available():
    return os.path.exists(DOVECOT) and os.path.exists("/usr/lib/dovecot/imap")


class Dovecot:
    """`with Dovecot() as dovecot:` then dovecot.port, dovecot.login(user). Its directory
    is a fresh one under /tmp that its unprivileged processes can reach (pytest's tmp_path
    is private to root), removed afterwards."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="mailsuite-dovecot-"))
        self.port = free_port()
        self.process = None

    def __enter__(self):
        base = self.base
        for sub in ("run", "state", "log", "home"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            mail_user = pwd.getpwnam("nobody")
            uid, gid, login_user, internal_user = mail_user.pw_uid, mail_user.pw_gid, "dovenull", "dovecot"
        else:
            uid, gid = os.getuid(), os.getgid()
            login_user = internal_user = pwd.getpwuid(uid).pw_name
        os.chmod(base, 0o755)
        os.chown(base / "home", uid, gid)
        (base / "users").write_text("".join(
            f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{base}/home/{user}::\n" for user, password in USERS.items()
        ))
        (base / "dovecot.conf").write_text(CONF.format(base=base, port=self.port, login_user=login_user,
                                                       internal_user=internal_user))
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(base / "dovecot.conf")], stdin=subprocess.DEVNULL,
            stdout=open(base / "log" / "master.out", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("dovecot did not start: " + (base / "log" / "master.out").read_text()
                                       + (base / "log" / "dovecot.log").read_text() if (base / "log" / "dovecot.log").exists() else "")
                time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)

    def login(self, user):
        """A logged-in imaplib client, to put mail there and change it as another client would."""
        import imaplib

        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(user, USERS[user])
        return client

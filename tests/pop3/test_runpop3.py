"""runpop3 as operators run it: no arguments, configured ports, several processes sharing
the maildrop lock through the database, a clean stop on SIGTERM."""
import signal

import pytest

from accounts import actions
from mailsuite import settings as project_settings
from pop3.models import MaildropLock
from tests.conftest import PASSWORD, inbox
from tests.e2e.helpers import child_env, free_port, manage, settings_blob_location, wait_for_port
from tests.pop3.conftest import Client, SSLClient, deliver, insecure_context, pop3_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def pop3s_login(port):
    client = SSLClient("127.0.0.1", port, context=insecure_context(), timeout=10)
    client.user("alice@example.test")
    return client, client.pass_(PASSWORD)


@pytest.mark.parametrize("workers", [1, 2])
def test_runpop3_serves_the_configured_ports_locks_across_processes_and_stops_on_sigterm(
    alice, tmp_path, settings, workers
):
    data_dir = tmp_path / "data"
    settings_blob_location(settings, data_dir)
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    # The child process checks passwords with the project's hashers, not the tests' fast one.
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    actions.set_password("alice@example.test", PASSWORD)
    deliver(alice)
    deliver(alice)
    pop3_port, pop3s_port = free_port(), free_port()
    env = child_env(
        data_dir, MAILSUITE_POP3_PORT=pop3_port, MAILSUITE_POP3S_PORT=pop3s_port, MAILSUITE_BIND="127.0.0.1",
        MAILSUITE_HOSTNAME="pop.example.test",
    )
    argv = ["runpop3"] if workers == 1 else ["runpop3", "--workers", str(workers)]
    server = manage(*argv, env=env)
    try:
        wait_for_port(pop3_port, process=server)
        wait_for_port(pop3s_port, process=server)
        first, reply = pop3s_login(pop3s_port)
        assert reply == b"+OK Logged in; maildrop has 2 messages (360 octets)"
        assert first.getwelcome().startswith(b"+OK pop.example.test POP3 server ready <")
        # Another process (this test's own server) sees the lock.
        with pop3_servers() as local:
            other = Client("127.0.0.1", local.ports["pop3"], timeout=10)
            other.stls(insecure_context())
            other.user("alice@example.test")
            assert other.command(f"PASS {PASSWORD}") == "-ERR [IN-USE] Maildrop is locked by another session"
            other.quit()
        # And so does another connection to runpop3 (with two workers, maybe another process).
        for _ in range(4):
            second = Client("127.0.0.1", pop3_port, timeout=10)
            second.stls(insecure_context())
            second.user("alice@example.test")
            assert second.command(f"PASS {PASSWORD}") == "-ERR [IN-USE] Maildrop is locked by another session"
            second.quit()
        first.dele(1)
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # The session ended with the server: nothing deleted, the lock given up.
    assert len(inbox(alice)) == 2
    assert MaildropLock.objects.get(account=alice).holder == ""

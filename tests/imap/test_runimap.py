"""runimap with several worker processes sharing its ports (SO_REUSEPORT), as operators run
it by default: every worker serves sessions, a change made through one worker reaches a
client idling on another, SIGTERM stops them all, and bad arguments are refused."""
import imaplib
import os
import signal
import time

import pytest
from django.core.management import CommandError, call_command

from accounts import actions
from mailsuite import settings as project_settings
from tests.conftest import PASSWORD
from tests.e2e.helpers import alive, child_env, children_of, free_port, manage, settings_blob_location, wait_for_port


ADDRESS = "alice@example.test"


def login(port):
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.login(ADDRESS, PASSWORD)
    return client


def serving_worker(client, workers):
    """Which of the worker pids holds the server end of this client's connection (Linux /proc)."""
    client_port = client.sock.getsockname()[1]
    with open("/proc/net/tcp") as table:
        # The server end's remote address is the client's own port; column 9 is its inode.
        inodes = [row.split()[9] for row in table.readlines()[1:] if int(row.split()[2].split(":")[1], 16) == client_port]
    assert inodes, "no server-side socket for this connection"
    wanted = f"socket:[{inodes[0]}]"
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                    return pid
            except OSError:
                continue
    return None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runimap_workers_share_the_ports_hear_each_other_and_stop_on_sigterm(alice, tmp_path, settings):
    data_dir = tmp_path / "data"
    settings_blob_location(settings, data_dir)
    # The children check passwords with the project's hashers, not the tests' fast one.
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    actions.set_password(ADDRESS, PASSWORD)
    port, tls_port = free_port(), free_port()
    env = child_env(
        data_dir, MAILSUITE_IMAP_PORT=port, MAILSUITE_IMAPS_PORT=tls_port, MAILSUITE_BIND="127.0.0.1",
        MAILSUITE_HOSTNAME="imap.example.test", MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK=1, MAILSUITE_IMAP_WORKERS=2,
        MAILSUITE_IMAP_IDLE_POLL=600,  # only the change bus can wake the idler in time
    )
    server = manage("runimap", env=env)
    clients = []
    try:
        wait_for_port(port, process=server)
        wait_for_port(tls_port, process=server)
        deadline = time.monotonic() + 30
        while len(children_of(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children_of(server.pid)
        assert len(workers) == 2
        # Connect until both workers hold a session (the kernel spreads connections over them
        # once both listen; on a loaded machine the second may still be starting).
        by_worker = {}
        deadline = time.monotonic() + 30
        while len(by_worker) < 2 and time.monotonic() < deadline:
            client = login(port)
            clients.append(client)
            worker = serving_worker(client, workers)
            if worker is None or worker in by_worker:
                time.sleep(0.2)
            if worker is not None:
                by_worker.setdefault(worker, client)
        assert set(by_worker) == set(workers), "the kernel never gave the second worker a connection"
        idler, writer = by_worker[workers[0]], by_worker[workers[1]]
        assert idler.select("INBOX") == ("OK", [b"0"])
        tag = idler._new_tag().decode()
        idler.send(f"{tag} IDLE\r\n".encode())
        assert idler.readline().startswith(b"+ ")
        appended = writer.append("INBOX", None, None, b"Subject: across workers\r\n\r\nhello\r\n")
        assert appended[0] == "OK"
        started = time.monotonic()
        assert idler.readline() == b"* 1 EXISTS\r\n"
        assert time.monotonic() - started < 2
        idler.send(b"DONE\r\n")
        assert idler.readline().startswith(tag.encode() + b" OK")
        for client in clients:
            client.logout()
        clients = []
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert not any(alive(pid) for pid in workers)
    finally:
        for client in clients:
            try:
                client.shutdown()
            except OSError:
                pass
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "0", "--workers", "2"], "several workers need fixed ports (not 0); use --workers 1 for a free port"),
        (["--workers", "-1"], "--workers cannot be negative"),
    ],
)
def test_runimap_refuses_bad_worker_arguments(args, message):
    with pytest.raises(CommandError) as refused:
        call_command("runimap", *args)
    assert str(refused.value) == message

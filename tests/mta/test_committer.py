"""The commit service that several SMTP worker processes share."""
import smtplib
import threading

import pytest

from mta.committer import CommitServer, RemoteCommitter, socket_path
from tests.conftest import ServerThread, inbox

pytestmark = pytest.mark.django_db(transaction=True)

RAW = b"From: m@elsewhere.test\r\nSubject: via the commit service\r\n\r\nbody\r\n"


def smtp_with(committer):
    from mta.smtpd import InboundHandler, Listener, SMTPService

    async def start():
        service = SMTPService(InboundHandler(committer=committer), hostname="mx.example.test")
        return {"smtp": (service, await service.listen(Listener("127.0.0.1", 0)))}

    return ServerThread(start)


@pytest.fixture
def commit_service(tmp_path):
    server = CommitServer(socket_path(str(tmp_path), 2525))
    thread = threading.Thread(target=server.serve_forever, kwargs={"handle_signals": False})
    thread.start()
    yield server
    server.stopping = True
    thread.join(10)


def test_workers_deliver_through_the_commit_service(commit_service, alice, bob):
    with smtp_with(RemoteCommitter(commit_service.path)) as smtp:
        clients = [smtplib.SMTP("127.0.0.1", smtp.port, local_hostname="c.test") for _ in range(4)]
        for i, client in enumerate(clients):
            assert client.sendmail("m@elsewhere.test", ["alice@example.test", "bob@example.test"], RAW) == {}
        code, text = clients[0].mail("m@elsewhere.test")
        clients[0].rcpt("alice@example.test")
        code, text = clients[0].data(RAW)
        for client in clients:
            client.quit()
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    assert (len(inbox(alice)), len(inbox(bob))) == (5, 4)


def test_without_the_commit_service_mail_is_refused_for_now(tmp_path, alice):
    committer = RemoteCommitter(str(tmp_path / "nothing-here.sock"), retry_delays=(0.05,))
    with smtp_with(committer) as smtp:
        client = smtplib.SMTP("127.0.0.1", smtp.port, local_hostname="c.test")
        client.ehlo()
        client.mail("m@elsewhere.test")
        client.rcpt("alice@example.test")
        assert client.data(RAW) == (451, b"4.3.0 Service not available; try again later")
        client.quit()
    assert inbox(alice) == []


def test_a_long_data_dir_gets_a_short_socket_path(tmp_path):
    deep = tmp_path / ("d" * 120)
    path = socket_path(str(deep), 25)
    assert len(path.encode()) < 100
    assert path == socket_path(str(deep), 25)

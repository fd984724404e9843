"""One queue id follows a message through the logs: from MAIL FROM (before DATA) through the
SMTP session, its acceptance, the queue and delivery; the structured fields say so in JSON
(MAILSUITE_LOG_FORMAT=json) and never carry a password."""
import base64
import json
import logging
import smtplib
import ssl

import pytest

from accounts import actions
from mta import delivery
from mailsuite.lib.logs import JSONFormatter
from tests.conftest import PASSWORD
from tests.mta.test_queue import MESSAGE, MX1, net  # noqa: F401 (a fixture)
from tests.mta.sink import Sink

pytestmark = pytest.mark.django_db(transaction=True)


class JSONLines(logging.Handler):
    """Every record of the process, as the JSON formatter writes it."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(JSONFormatter())
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))

    def objects(self):
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def json_logs():
    handler = JSONLines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_it_logs_one_queue_id_from_mail_from_to_delivery(net, alice, smtp_server, json_logs):  # noqa: F811
    actions.create_redirect("old@example.test", "new@faraway.test")
    with Sink(MX1, net.mail_port) as mx1:
        client = smtplib.SMTP("127.0.0.1", smtp_server.port, local_hostname="sender.test", timeout=10)
        client.ehlo()
        assert client.mail("someone@sender.test")[0] == 250
        before_data = [o for o in json_logs.objects() if o["message"].startswith("mail from=<someone@sender.test>")]
        assert client.rcpt("old@example.test")[0] == 250
        code, reply = client.data(MESSAGE)
        client.quit()
        assert code == 250
        queue_id = reply.decode().rsplit(" ", 1)[-1]
        delivery.deliver_domain("faraway.test")
        [got] = mx1.received
    assert f"with ESMTP id {queue_id}".encode() in got.data  # the Received: field names it too

    # The id was in the log before DATA was sent.
    [mail_from] = before_data
    assert mail_from["queue_id"] == queue_id
    assert (mail_from["protocol"], mail_from["peer"], mail_from["logger"], mail_from["level"]) == (
        "smtp", "127.0.0.1", "mta.smtpd", "INFO",
    )
    lines = [o for o in json_logs.objects() if o.get("queue_id") == queue_id]
    messages = [o["message"] for o in lines]
    assert messages[0] == f"mail from=<someone@sender.test> id={queue_id}"
    assert messages[1] == f"rcpt to=<old@example.test> id={queue_id} 250 2.1.5 Ok"
    assert messages[2].startswith(f"accepted id={queue_id} from=<someone@sender.test> delivered=0 queued=1 ")
    assert messages[3].startswith(f"delivered to=<new@faraway.test> id={queue_id} 250 ")
    assert len(lines) == 4
    delivered = lines[3]
    assert (delivered["to"], delivered["status"], delivered["protocol"], delivered["logger"]) == (
        "new@faraway.test", "2.0.0", "smtp-out", "mta.delivery",
    )
    assert delivered["peer"] == f"mx1.faraway.test[{MX1}]"
    # No other id was made for it along the way.
    assert len({o["queue_id"] for o in json_logs.objects() if o.get("queue_id")}) == 1


def test_submission_lines_name_the_account_and_never_the_password(net, alice, submission_servers, json_logs):  # noqa: F811
    client = smtplib.SMTP("127.0.0.1", submission_servers.ports["submission"], local_hostname="laptop.test", timeout=10)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client.starttls(context=context)
    client.login("alice@example.test", PASSWORD)
    assert client.sendmail("alice@example.test", ["friend@faraway.test"], MESSAGE) == {}
    client.quit()
    [mail_from] = [o for o in json_logs.objects() if o["message"].startswith("mail from=")]
    assert (mail_from["protocol"], mail_from["account"]) == ("submission", "alice@example.test")
    everything = "\n".join(json_logs.lines)
    assert PASSWORD not in everything
    plain_payload = base64.b64encode(f"\0alice@example.test\0{PASSWORD}".encode()).decode()
    assert plain_payload not in everything

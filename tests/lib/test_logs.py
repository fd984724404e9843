"""The JSON log format (MAILSUITE_LOG_FORMAT=json): one object per line, the structured
fields and nothing else from the record, never a secret; a bad setting stops the start."""
import json
import logging
import os
import subprocess
import sys

import pytest

from mailsuite.lib import logs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def record(message, *args, level=logging.INFO, extra=None, exc_info=None):
    made = logging.getLogger("mta.delivery").makeRecord(
        "mta.delivery", level, __file__, 1, message, args, exc_info, extra=extra,
    )
    made.created = 1795000000.25  # 2026-11-18T11:06:40.250Z
    return made


def test_it_writes_one_object_per_line_with_the_structured_fields():
    line = logs.JSONFormatter().format(record(
        "delivered to=<%s> id=%s", "bob@far.test", "0A1B2C3D4E5F",
        extra=logs.fields(queue_id="0A1B2C3D4E5F", protocol="smtp-out", peer="mx.far.test[192.0.2.7]",
                          to="bob@far.test", status="2.0.0"),
    ))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-11-18T11:06:40.250+00:00", "level": "INFO", "logger": "mta.delivery",
        "message": "delivered to=<bob@far.test> id=0A1B2C3D4E5F", "process": os.getpid(),
        "queue_id": "0A1B2C3D4E5F", "protocol": "smtp-out", "peer": "mx.far.test[192.0.2.7]",
        "to": "bob@far.test", "status": "2.0.0",
    }


def test_a_message_with_newlines_stays_on_one_line_and_exceptions_come_along():
    try:
        raise ValueError("boom")
    except ValueError:
        line = logs.JSONFormatter().format(record("two\nlines", level=logging.ERROR, exc_info=sys.exc_info()))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "two\nlines" and parsed["level"] == "ERROR"
    assert parsed["exception"].startswith("Traceback") and "ValueError: boom" in parsed["exception"]


def test_it_writes_only_known_fields_and_never_a_secret(monkeypatch):
    made = record("login", extra={"password": "hunter2", "auth_data": "AGFsaWNlAGh1bnRlcjI=", "account": "a@b.test"})
    parsed = json.loads(logs.JSONFormatter().format(made))
    assert "hunter2" not in json.dumps(parsed) and "AGFsaWNl" not in json.dumps(parsed)
    assert parsed["account"] == "a@b.test"
    # Even a field someone adds to the list is refused when its name speaks of a secret.
    monkeypatch.setattr(logs, "FIELDS", (*logs.FIELDS, "password"))
    assert "hunter2" not in logs.JSONFormatter().format(made)


def test_fields_refuses_an_unknown_name_and_leaves_out_empty_ones():
    assert logs.fields(queue_id="X", peer=None) == {"queue_id": "X"}
    with pytest.raises(ValueError, match="not a structured log field: password"):
        logs.fields(password="hunter2")


def run_with(log_format):
    env = {**os.environ, "MAILSUITE_LOG_FORMAT": log_format, "DJANGO_SETTINGS_MODULE": "mailsuite.settings"}
    code = (
        "import django, logging; django.setup(); "
        "from mailsuite.lib.logs import fields; "
        "logging.getLogger('mta.smtpd').info('mail from=<%s>', 'a@b.test', extra=fields(queue_id='ABC', peer='192.0.2.1'))"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_the_setting_selects_json_for_the_whole_process():
    done = run_with("json")
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "mail from" in line]
    parsed = json.loads(line)
    assert (parsed["logger"], parsed["message"], parsed["queue_id"], parsed["peer"]) == (
        "mta.smtpd", "mail from=<a@b.test>", "ABC", "192.0.2.1",
    )
    plain = run_with("plain")
    assert plain.returncode == 0, plain.stderr
    assert " INFO mta.smtpd[" in plain.stderr and "mail from=<a@b.test>" in plain.stderr


def test_a_bad_setting_stops_the_start_with_a_clear_error():
    done = run_with("xml")
    assert done.returncode != 0
    assert "MAILSUITE_LOG_FORMAT='xml': expected plain or json" in done.stderr

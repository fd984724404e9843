"""Log output: the plain text format, or one JSON object per line for log collectors.

MAILSUITE_LOG_FORMAT=json selects JSONFormatter. Each line is an object with `time` (UTC,
ISO 8601 with milliseconds), `level`, `logger`, `message` and `process`, plus the structured
fields a log call passes with `extra=` (see FIELDS: the message's queue id, the protocol,
the client or server at the other end, the account) and `exception` when there is one.

Implementation notes:
- Only the fields named in FIELDS leave the process, so whatever else a library puts on a
  record (an AUTH exchange, a request's headers) is never written out. A field whose name
  speaks of a secret is refused even if someone adds it to FIELDS.
- The message is the formatted text the code chose to log: the code never logs passwords
  or AUTH payloads (aiosmtpd's own command log is silenced in settings.LOGGING for that).
"""
import json
import logging
from datetime import datetime, timezone

# The structured fields a log line may carry, in the order they are written.
FIELDS = ("queue_id", "protocol", "peer", "account", "to", "status")
_SECRET_WORDS = ("password", "passwd", "secret", "token", "auth", "sasl", "credential")
FORMATS = ("plain", "json")


def fields(*, queue_id=None, protocol=None, peer=None, account=None, **others):
    """The `extra=` of a log call carrying structured fields; None values are left out."""
    given = {"queue_id": queue_id, "protocol": protocol, "peer": peer, "account": account, **others}
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise ValueError(f"not a structured log field: {', '.join(sorted(unknown))}")
    return {name: value for name, value in given.items() if value is not None}


def _is_secret(name):
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


class JSONFormatter(logging.Formatter):
    """One JSON object per line (no newline inside: json.dumps escapes them)."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None and not _is_secret(name):
                entry[name] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def logging_config(log_format, level):
    """settings.LOGGING for `log_format` ("plain" or "json") at `level`."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: expected plain or json")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"},
            "json": {"()": "mailsuite.lib.logs.JSONFormatter"},
        },
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # aiosmtpd logs every command line at INFO, AUTH payloads included, and warns on
            # every SMTPS connection that AUTH does not require STARTTLS (it is TLS already).
            "mail.log": {"level": "ERROR"},
            "mail.debug": {"level": "WARNING"},
        },
    }

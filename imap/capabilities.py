"""The capabilities we announce (RFC 9051 §6.1.1), each with its RFC."""
from django.conf import settings

from imap.session import State


def capability_names(session):
    """RFC 9051 §6.1.1; every extension's RFC beside it."""
    names = ["IMAP4rev1", "IMAP4rev2"]  # RFC 3501, RFC 9051
    if session.state is State.NOT_AUTHENTICATED:
        if not session.connection.tls and session.service.tls is not None:
            names.append("STARTTLS")  # RFC 9051 §6.2.1
        if session.login_allowed:
            names += ["AUTH=PLAIN", "AUTH=LOGIN", "AUTH=SCRAM-SHA-256"]  # RFC 4616, draft-murchison-sasl-login, RFC 7677
        else:
            names.append("LOGINDISABLED")  # RFC 9051 §6.2.3
        names.append("SASL-IR")  # RFC 4959
    names += [
        "LITERAL+",  # RFC 7888
        "ID",  # RFC 2971
        "ENABLE",  # RFC 5161
        "IDLE",  # RFC 2177
        "NAMESPACE",  # RFC 2342
        "UNSELECT",  # RFC 3691
        "UIDPLUS",  # RFC 4315
        "MOVE",  # RFC 6851
        "MULTIAPPEND",  # RFC 3502
        "BINARY",  # RFC 3516
        "SPECIAL-USE",  # RFC 6154
        "CREATE-SPECIAL-USE",  # RFC 6154 §3
        "LIST-EXTENDED",  # RFC 5258
        "LIST-STATUS",  # RFC 5819
        "CHILDREN",  # RFC 3348
        "ESEARCH",  # RFC 4731
        "SEARCHRES",  # RFC 5182
        "CONDSTORE",  # RFC 7162
        "QRESYNC",  # RFC 7162
        "QUOTA",  # RFC 9208
        "QUOTA=RES-STORAGE",  # RFC 9208 §5.1
        f"APPENDLIMIT={settings.MAILSUITE_MESSAGE_SIZE_LIMIT}",  # RFC 7889
        "STATUS=SIZE",  # RFC 8438
        "SORT",  # RFC 5256
        "THREAD=REFERENCES",  # RFC 5256
        "THREAD=ORDEREDSUBJECT",  # RFC 5256
        "UTF8=ACCEPT",  # RFC 6855
        "PREVIEW",  # RFC 8970
        "OBJECTID",  # RFC 8474
    ]
    if not session.connection.compressed:
        names.append("COMPRESS=DEFLATE")  # RFC 4978
    return names

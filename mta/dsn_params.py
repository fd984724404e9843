"""RFC 3461 parameters on MAIL FROM (RET, ENVID) and RCPT TO (NOTIFY, ORCPT), read from
the command as the client wrote it. Pure functions; ValueError with a one-line reason."""
import re

_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}


def _parameters(argument):
    """{NAME: value} of the ESMTP parameters after the <path> of a MAIL/RCPT argument."""
    _, bracket, rest = argument.partition(">")
    params = {}
    for token in (rest if bracket else "").split():
        name, _, value = token.partition("=")
        params[name.upper()] = value
    return params


def mail_parameters(argument):
    """{"ret", "envid", "notify": {}, "orcpt": {}} for a MAIL FROM argument."""
    params = _parameters(argument)
    ret = params.get("RET", "").upper()
    if ret not in ("", "FULL", "HDRS"):
        raise ValueError("RET must be FULL or HDRS")
    envid = params.get("ENVID", "")
    if len(envid) > 100 or not _XTEXT.fullmatch(envid):
        raise ValueError("ENVID must be xtext of at most 100 characters")
    return {"ret": ret, "envid": envid, "notify": {}, "orcpt": {}}


def rcpt_parameters(argument):
    """(notify, orcpt) for a RCPT TO argument: NOTIFY as a comma list ("" if absent)."""
    params = _parameters(argument)
    notify = params.get("NOTIFY", "").upper()
    if notify:
        words = notify.split(",")
        if words != ["NEVER"] and (not set(words) <= _NOTIFY_WORDS or len(set(words)) != len(words)):
            raise ValueError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    orcpt = params.get("ORCPT", "")
    if orcpt:
        addr_type, semicolon, value = orcpt.partition(";")
        if not semicolon or not addr_type or len(orcpt) > 500 or not _XTEXT.fullmatch(value):
            raise ValueError("ORCPT must be addr-type;xtext")
    return notify, orcpt

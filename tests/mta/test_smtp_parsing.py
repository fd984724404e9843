"""MailSMTP's shortcuts past aiosmtpd's slow paths give aiosmtpd's own results: the plain
path reader agrees with aiosmtpd's RFC 5322 parse, and the short dir() still yields every
command and AUTH mechanism."""
from types import SimpleNamespace as NS

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from mta.smtpd import InboundHandler, MailSMTP, SubmissionHandler, plain_path


def aiosmtpd_reads(arg):
    return SMTP._getaddr(NS(local_part_limit=0), arg)


@pytest.mark.parametrize("arg", [
    "<alice@example.test>",
    "<alice@example.test> SIZE=2048 BODY=8BITMIME",
    "<a.b+tag@mail-1.example.test>\tSMTPUTF8",
    " <Alice@Example.TEST>  ",
    "<o'brien/x=y@example.test>x",
])
def test_plain_paths_are_read_as_aiosmtpd_reads_them(arg):
    assert plain_path(arg) == aiosmtpd_reads(arg)


@pytest.mark.parametrize("arg", [
    "<>", "<> SIZE=10", "alice@example.test", "<\"a b\"@example.test>", "<alice@[127.0.0.1]>",
    "<alice@example.test> (comment) SIZE=1", "<@relay.test:alice@example.test>", "<a..b@example.test>",
    "<alice@example..test>", "<ålice@exämple.test>", "<alice@example.test.>",
])
def test_other_paths_are_left_to_aiosmtpd(arg):
    assert plain_path(arg) is None


_atoms = st.text(alphabet="abcXYZ09!#$%&'*+/=?^_`{|}~-.", min_size=1, max_size=12)
_labels = st.text(alphabet="abz09-.", min_size=1, max_size=12)
_rest = st.sampled_from(["", " ", " SIZE=1", "\tBODY=8BITMIME", " (c) X=1", "x", "  "])


@given(local=_atoms, domain=_labels, rest=_rest, space=st.sampled_from(["", " "]))
def test_whatever_the_shortcut_reads_aiosmtpd_reads_the_same(local, domain, rest, space):
    arg = f"{space}<{local}@{domain}>{rest}"
    plain = plain_path(arg)
    if plain is not None:
        assert plain == aiosmtpd_reads(arg)


@pytest.mark.parametrize("handler_class", [InboundHandler, SubmissionHandler])
def test_a_session_keeps_every_command_hook_and_auth_mechanism(handler_class):
    handler = handler_class.__new__(handler_class)
    session = MailSMTP(handler, hostname="mx.example.test")
    commands = {name[5:] for name in vars(SMTP) | vars(MailSMTP) if name.startswith("smtp_")}
    assert set(session._smtp_methods) == commands
    hooks = {name[7:] for name in object.__dir__(handler) if name.startswith("handle_")}
    assert set(session._handle_hooks) == hooks and {"MAIL", "RCPT", "DATA"} <= hooks
    mechanisms = {"LOGIN", "PLAIN"} | ({"SCRAM-SHA-256"} if handler_class is SubmissionHandler else set())
    assert mechanisms <= set(session._auth_methods)
    # What makes a connection cheap to set up: aiosmtpd reads every attribute dir() names.
    assert len(dir(session)) < 40 and len(dir(handler)) < 20

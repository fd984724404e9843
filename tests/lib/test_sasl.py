"""Tests for mailsuite.lib.sasl: PLAIN, LOGIN, SASLprep and SCRAM-SHA-256.

Pure tier: tables of input, expected value and error rows, the RFC 7677 test vector
byte for byte, the server exercised through our own client, and hypothesis fuzzing
that proves step() never raises anything but SaslError.
"""
import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsuite.lib.sasl import (
    MAX_MESSAGE_OCTETS,
    SaslAborted,
    SaslError,
    ScramCredentials,
    ScramSha256Client,
    ScramSha256Server,
    decode_plain,
    decode_response,
    encode_challenge,
    format_scram_credentials,
    login_challenges,
    make_scram_credentials,
    parse_scram_credentials,
    saslprep,
)

# RFC 7677 §3: user "user", password "pencil".
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_NONCE = RFC_CLIENT_NONCE + RFC_SERVER_NONCE
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
# The same credentials in the RFC 5803 form (PostgreSQL stores this exact string).
RFC_STORED = (
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
)
RFC_CREDENTIALS = parse_scram_credentials(RFC_STORED)
SERVER_FIRST_SHAPE = re.compile(rb"r=([\x21-\x2b\x2d-\x7e]+),s=([A-Za-z0-9+/]{22}==),i=4096")


class Directory:
    """A `lookup` over a dict of username → password that records every call."""

    def __init__(self, **passwords):
        self.credentials = {
            name: parse_scram_credentials(make_scram_credentials(password))
            for name, password in passwords.items()
        }
        self.calls = []

    def add(self, name, password):
        self.credentials[name] = parse_scram_credentials(make_scram_credentials(password))

    def __call__(self, username):
        self.calls.append(username)
        return self.credentials.get(username)


def rfc_server(**kwargs):
    return ScramSha256Server(
        lambda name: RFC_CREDENTIALS if name == "user" else None, nonce=RFC_SERVER_NONCE, **kwargs
    )


def run_exchange(server, client):
    """Drive both sides like a protocol loop; returns the transcript of messages."""
    transcript = [client.start()]
    while (challenge := server.step(transcript[-1])) is not None:
        transcript.append(challenge)
        transcript.append(client.step(challenge))
    return transcript


def assert_dead(server):
    """After a failure the server refuses everything and authenticated nobody."""
    assert not server.done
    assert server.username is None
    with pytest.raises(SaslError):
        server.step(b"")
    with pytest.raises(SaslError):
        server.step(RFC_CLIENT_FINAL)


# --- RFC 7677 test vector ------------------------------------------------------------


def test_server_reproduces_rfc7677_exchange():
    server = rfc_server()
    assert server.step(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert not server.done
    assert server.username is None
    assert server.step(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    assert server.done
    assert server.username == "user"
    assert server.step(b"") is None
    assert server.done
    with pytest.raises(SaslError, match="finished"):
        server.step(b"")


def test_client_reproduces_rfc7677_exchange():
    client = ScramSha256Client("user", "pencil", nonce=RFC_CLIENT_NONCE)
    assert client.start() == RFC_CLIENT_FIRST
    assert client.step(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert not client.done
    assert client.step(RFC_SERVER_FINAL) == b""
    assert client.done


def test_rfc7677_credentials_in_rfc5803_form():
    assert make_scram_credentials("pencil", salt=RFC_SALT) == RFC_STORED
    assert RFC_CREDENTIALS == ScramCredentials(
        iterations=4096,
        salt=RFC_SALT,
        stored_key=base64.b64decode("WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="),
        server_key=base64.b64decode("wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="),
    )
    assert format_scram_credentials(RFC_CREDENTIALS) == RFC_STORED


def test_full_exchange_through_the_client_matches_rfc7677():
    transcript = run_exchange(rfc_server(), ScramSha256Client("user", "pencil", nonce=RFC_CLIENT_NONCE))
    assert transcript == [RFC_CLIENT_FIRST, RFC_SERVER_FIRST, RFC_CLIENT_FINAL, RFC_SERVER_FINAL, b""]


# --- Round trips through our client --------------------------------------------------

ROUND_TRIPS = [
    # username, password stored, password the client types
    ("user", "pencil", "pencil"),
    ("jörg@example.test", "pässwörd", "pässwörd"),
    ("user", "пароль с пробелом", "пароль с пробелом"),
    ("user", "密码", "密码"),
    ("user", "I\u00adX", "IX"),  # RFC 4013 §3: soft hyphen mapped to nothing
    ("user", "IX", "I\u00adX"),
    ("user", "a\u00a0b", "a b"),  # NBSP mapped to SPACE
    ("user", "a b", "a\u2003b"),  # EM SPACE mapped to SPACE
    ("user", "a\u200bb", "ab"),  # ZERO WIDTH SPACE: B.1, mapped to nothing
    ("user", "\u2168", "IX"),  # NFKC: ROMAN NUMERAL NINE
    ("user", "\u00aa", "a"),  # NFKC: FEMININE ORDINAL INDICATOR
    ("user", "key\U0001f511", "key\U0001f511"),  # unassigned in Unicode 3.2: UTF-8 as is
    ("user", "bell\u0007", "bell\u0007"),  # prohibited: UTF-8 as is
    ("user", "\u0627a\u0628", "\u0627a\u0628"),  # bidi violation: UTF-8 as is
    ("a,b=c@example.test", "pencil", "pencil"),
    ("=2C=3D", "pencil", "pencil"),
    ("ü", "x", "x"),
]


@pytest.mark.parametrize("username, stored_password, typed_password", ROUND_TRIPS)
def test_round_trip(username, stored_password, typed_password):
    directory = Directory(**{username: stored_password})
    server = ScramSha256Server(directory)
    client = ScramSha256Client(username, typed_password)
    transcript = run_exchange(server, client)
    assert len(transcript) == 5
    assert server.done and client.done
    assert server.username == username
    assert directory.calls == [username]


def test_server_final_can_go_with_the_success_reply():
    """ManageSieve style: the exchange is complete once step() returned "v=..."."""
    server = ScramSha256Server(Directory(alice="secret"))
    client = ScramSha256Client("alice", "secret")
    server_final = server.step(client.step(server.step(client.start())))
    assert server.done and server.username == "alice"
    assert client.step(server_final) == b""
    assert client.done


USERNAMES = [
    # what the client is given, n= it sends, what lookup() receives
    ("user", b"n=user", "user"),
    ("a,b", b"n=a=2Cb", "a,b"),
    ("a=b", b"n=a=3Db", "a=b"),
    ("=2C", b"n==3D2C", "=2C"),
    (",,==", b"n==2C=2C=3D=3D", ",,=="),
    ("ü", "n=ü".encode(), "ü"),
    ("\u2168", b"n=IX", "IX"),  # the client SASLprep's too
    ("I\u00adX", b"n=IX", "IX"),
]


@pytest.mark.parametrize("given_name, sent, looked_up", USERNAMES)
def test_usernames_are_escaped_and_unescaped(given_name, sent, looked_up):
    directory = Directory(**{looked_up: "pw"})
    client = ScramSha256Client(given_name, "pw", nonce="abc")
    first = client.start()
    assert first == b"n,," + sent + b",r=abc"
    server = ScramSha256Server(directory)
    client.step(server.step(client.step(server.step(first))))
    assert directory.calls == [looked_up]
    assert server.username == looked_up


@pytest.mark.parametrize(
    "client_first, looked_up",
    [
        ("n,,n=I\u00adX,r=abc", "IX"),
        ("n,,n=a\u00a0b,r=abc", "a b"),
        ("n,,n=\u2168,r=abc", "IX"),
        ("n,,n=a=2C\u00adb,r=abc", "a,b"),
        ("n,,n=key\U0001f511,r=abc", "key\U0001f511"),  # unassigned allowed in a query
    ],
)
def test_server_saslpreps_names_the_client_did_not(client_first, looked_up):
    directory = Directory()
    ScramSha256Server(directory).step(client_first.encode("utf-8"))
    assert directory.calls == [looked_up]


def test_channel_binding_must_repeat_the_gs2_header_sent():
    """The client said "y,," but then sends c=biws ("n,,"): refused (RFC 5802 §7)."""
    server = ScramSha256Server(Directory(alice="secret"), nonce="srv")
    server_first = server.step(b"y,,n=alice,r=cli")
    assert server_first.startswith(b"r=clisrv,")
    client = ScramSha256Client("alice", "secret", nonce="cli")
    client.start()
    final = client.step(server_first)
    assert final.startswith(b"c=biws,")
    with pytest.raises(SaslError, match="channel binding"):
        server.step(final)
    assert_dead(server)


def test_gs2_flag_y_full_exchange():
    """A client that sends "y" and c=eSws (base64 of "y,,") authenticates."""
    client = ScramSha256Client("alice", "secret", nonce="cli", gs2_flag="y")
    server = ScramSha256Server(Directory(alice="secret"))
    first = client.start()
    assert first.startswith(b"y,,")
    final = client.step(server.step(first))
    assert final.startswith(b"c=eSws,")
    assert client.step(server.step(final)) == b""
    assert server.username == "alice"


@pytest.mark.parametrize("authzid", ["alice", "ali\u00adce"])
def test_authzid_naming_the_user_is_accepted(authzid):
    server = ScramSha256Server(Directory(alice="secret"))
    client = ScramSha256Client("alice", "secret", authzid=authzid, nonce="cli")
    first = client.start()
    assert first == b"n,a=alice,n=alice,r=cli"
    final = client.step(server.step(first))
    assert final.startswith(b"c=" + base64.b64encode(b"n,a=alice,") + b",")
    client.step(server.step(final))
    assert server.username == "alice"


def test_authzid_naming_someone_else_is_refused():
    directory = Directory(alice="secret", bob="secret")
    server = ScramSha256Server(directory)
    with pytest.raises(SaslError, match="authorisation identity"):
        server.step(b"n,a=bob,n=alice,r=cli")
    assert directory.calls == []
    assert_dead(server)


# --- Failures ------------------------------------------------------------------------


@pytest.mark.parametrize("typed_password", ["Pencil", "pencil ", "penci", "pencil\u00a0x", "\u00adpencil2"])
def test_wrong_password_fails_only_at_the_final_step(typed_password):
    server = rfc_server()
    client = ScramSha256Client("user", typed_password)
    server_first = server.step(client.start())
    assert SERVER_FIRST_SHAPE.fullmatch(server_first)
    with pytest.raises(SaslError, match="authentication failed"):
        server.step(client.step(server_first))
    assert_dead(server)


def test_unknown_user_fails_only_at_the_final_step():
    directory = Directory(alice="secret")
    known = ScramSha256Server(directory, nonce="S" * 24)
    unknown = ScramSha256Server(directory, nonce="S" * 24)
    known_first = known.step(b"n,,n=alice,r=cli")
    unknown_first = unknown.step(b"n,,n=mallo,r=cli")
    assert directory.calls == ["alice", "mallo"]
    # Same shape, same length, same iteration count: nothing tells them apart.
    assert SERVER_FIRST_SHAPE.fullmatch(known_first)
    assert SERVER_FIRST_SHAPE.fullmatch(unknown_first)
    assert len(known_first) == len(unknown_first)

    client = ScramSha256Client("mallo", "secret", nonce="cli")
    client.start()
    with pytest.raises(SaslError, match="authentication failed"):
        unknown.step(client.step(unknown_first))
    assert_dead(unknown)


def test_unknown_user_gets_a_stable_salt():
    """A salt that changed on every attempt would give unknown users away."""

    def salt_for(name, **kwargs):
        server_first = ScramSha256Server(Directory(), **kwargs).step(f"n,,n={name},r=cli".encode())
        return SERVER_FIRST_SHAPE.fullmatch(server_first)[2]

    assert salt_for("mallory") == salt_for("mallory")
    assert salt_for("mallory") != salt_for("mallor")
    assert salt_for("mallory", fake_secret=b"k1") == salt_for("mallory", fake_secret=b"k1")
    assert salt_for("mallory", fake_secret=b"k1") != salt_for("mallory", fake_secret=b"k2")


def test_unknown_user_iterations_follow_fake_iterations():
    server_first = ScramSha256Server(Directory(), fake_iterations=10000).step(b"n,,n=nobody,r=cli")
    assert server_first.endswith(b",i=10000")


@pytest.mark.parametrize(
    "client_first",
    [
        b"p=tls-unique,,n=user,r=abc",
        b"p=tls-server-end-point,,n=user,r=abc",
        b"p=tls-exporter,a=user,n=user,r=abc",
    ],
)
def test_channel_binding_is_refused(client_first):
    directory = Directory()
    server = ScramSha256Server(directory)
    with pytest.raises(SaslError, match="channel binding"):
        server.step(client_first)
    assert directory.calls == []
    assert_dead(server)


MALFORMED_CLIENT_FIRST = {
    "empty": b"",
    "gs2 header only": b"n,,",
    "no nonce": b"n,,n=user",
    "unknown gs2 flag": b"x,,n=user,r=abc",
    "upper-case gs2 flag": b"N,,n=user,r=abc",
    "no gs2 header": b"n=user,r=abc",
    "mandatory extension first": b"n,,m=ext,n=user,r=abc",
    "mandatory extension later": b"n,,n=user,r=abc,m=ext",
    "extension without value": b"n,,n=user,r=abc,x=",
    "extension without =": b"n,,n=user,r=abc,x",
    "extension with long name": b"n,,n=user,r=abc,xy=1",
    "repeated nonce": b"n,,n=user,r=abc,r=def",
    "attributes swapped": b"n,,r=abc,n=user",
    "upper-case attribute": b"n,,N=user,r=abc",
    "empty attribute": b"n,,n=user,,r=abc",
    "empty username": b"n,,n=,r=abc",
    "username empty after SASLprep": "n,,n=\u00ad,r=abc".encode(),
    "bare = in username": b"n,,n=us=er,r=abc",
    "lower-case escape": b"n,,n=a=2cb,r=abc",
    "unknown escape": b"n,,n=a=2Db,r=abc",
    "truncated escape": b"n,,n=ab=2,r=abc",
    "control character in username": b"n,,n=a\x07b,r=abc",
    "private use in username": "n,,n=a\ue000b,r=abc".encode(),
    "bidi violation in username": "n,,n=\u06271,r=abc".encode(),
    "empty nonce": b"n,,n=user,r=",
    "space in nonce": b"n,,n=user,r=a b",
    "non-ASCII nonce": "n,,n=user,r=é".encode(),
    "control character in nonce": b"n,,n=user,r=a\x01b",
    "invalid UTF-8": b"\xff,,n=user,r=abc",
    "invalid UTF-8 in username": b"n,,n=us\xc3er,r=abc",
    "NUL": b"n,,n=user\x00,r=abc",
    "surrogate encoded in UTF-8": b"n,,n=\xed\xa0\x80,r=abc",
    "bad authzid attribute": b"n,x=user,n=user,r=abc",
    "empty authzid": b"n,a=,n=user,r=abc",
    "authzid with bad escape": b"n,a=us=er,n=user,r=abc",
    "oversized": b"n,,n=user,r=" + b"a" * MAX_MESSAGE_OCTETS,
    "client-final first": RFC_CLIENT_FINAL,
}


@pytest.mark.parametrize("message", MALFORMED_CLIENT_FIRST.values(), ids=MALFORMED_CLIENT_FIRST.keys())
def test_malformed_client_first_is_refused(message):
    directory = Directory(user="pencil")
    server = ScramSha256Server(directory)
    with pytest.raises(SaslError):
        server.step(message)
    assert directory.calls == []
    assert_dead(server)


def _flip_last_proof_byte():
    proof = bytearray(base64.b64decode(RFC_PROOF))
    proof[-1] ^= 1
    return base64.b64encode(bytes(proof)).decode()


MALFORMED_CLIENT_FINAL = {
    "empty": "",
    "no proof": f"c=biws,r={RFC_NONCE}",
    "proof only": f"p={RFC_PROOF}",
    "attributes swapped": f"r={RFC_NONCE},c=biws,p={RFC_PROOF}",
    "proof not last": f"c=biws,r={RFC_NONCE},p={RFC_PROOF},x=y",
    "proof twice": f"c=biws,r={RFC_NONCE},p={RFC_PROOF},p={RFC_PROOF}",
    "client nonce only": f"c=biws,r={RFC_CLIENT_NONCE},p={RFC_PROOF}",
    "nonce extended": f"c=biws,r={RFC_NONCE}x,p={RFC_PROOF}",
    "nonce changed": f"c=biws,r={RFC_NONCE[:-1]}1,p={RFC_PROOF}",
    "empty nonce": f"c=biws,r=,p={RFC_PROOF}",
    "c= says y,,": f"c=eSws,r={RFC_NONCE},p={RFC_PROOF}",
    "c= says p=tls-unique,,": f"c=cD10bHMtdW5pcXVlLCw=,r={RFC_NONCE},p={RFC_PROOF}",
    "c= with channel binding data": f"c=biwsAA==,r={RFC_NONCE},p={RFC_PROOF}",
    "c= empty": f"c=,r={RFC_NONCE},p={RFC_PROOF}",
    "c= not base64": f"c=bi*s,r={RFC_NONCE},p={RFC_PROOF}",
    "c= unpadded": f"c=biwsAA,r={RFC_NONCE},p={RFC_PROOF}",
    "mandatory extension": f"c=biws,r={RFC_NONCE},m=x,p={RFC_PROOF}",
    "repeated nonce as extension": f"c=biws,r={RFC_NONCE},r={RFC_NONCE},p={RFC_PROOF}",
    "unknown extension not covered by the proof": f"c=biws,r={RFC_NONCE},x=y,p={RFC_PROOF}",
    "empty proof": f"c=biws,r={RFC_NONCE},p=",
    "short proof": f"c=biws,r={RFC_NONCE},p=AAAA",
    "long proof": f"c=biws,r={RFC_NONCE},p={base64.b64encode(bytes(33)).decode()}",
    "proof with spaces": f"c=biws,r={RFC_NONCE},p= {RFC_PROOF}",
    "proof unpadded": f"c=biws,r={RFC_NONCE},p={RFC_PROOF.rstrip('=')}",
    # Decodes to the same octets as the real proof; only the canonical spelling passes.
    "proof non-canonical base64": f"c=biws,r={RFC_NONCE},p={RFC_PROOF[:-2]}R=",
    "wrong proof": f"c=biws,r={RFC_NONCE},p={_flip_last_proof_byte()}",
    "invalid UTF-8": b"c=biws,r=\xff,p=" + RFC_PROOF.encode(),
    "NUL": f"c=biws,r={RFC_NONCE},p={RFC_PROOF}\x00",
    "client-first again": RFC_CLIENT_FIRST,
    "oversized": f"c=biws,r={RFC_NONCE},p={RFC_PROOF}" + "x" * MAX_MESSAGE_OCTETS,
}


@pytest.mark.parametrize("message", MALFORMED_CLIENT_FINAL.values(), ids=MALFORMED_CLIENT_FINAL.keys())
def test_malformed_client_final_is_refused(message):
    server = rfc_server()
    server.step(RFC_CLIENT_FIRST)
    with pytest.raises(SaslError):
        server.step(message if isinstance(message, bytes) else message.encode())
    assert_dead(server)


def test_the_valid_client_final_passes_the_same_server():
    """Guards the table above: its rows fail for their own reason, not the setup."""
    server = rfc_server()
    server.step(RFC_CLIENT_FIRST)
    assert server.step(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


@pytest.mark.parametrize("message", [b"x", b"=", b"*", RFC_CLIENT_FINAL])
def test_anything_but_an_empty_acknowledgement_is_refused(message):
    server = rfc_server()
    server.step(RFC_CLIENT_FIRST)
    server.step(RFC_CLIENT_FINAL)
    with pytest.raises(SaslError):
        server.step(message)
    with pytest.raises(SaslError):
        server.step(b"")


def test_lookup_errors_are_server_faults_not_sasl_errors():
    def broken_lookup(username):
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        ScramSha256Server(broken_lookup).step(b"n,,n=user,r=abc")


@pytest.mark.parametrize("nonce", ["", "a,b", "a b", "é"])
def test_injected_server_nonce_must_be_printable(nonce):
    with pytest.raises(ValueError):
        ScramSha256Server(Directory(), nonce=nonce)


# --- Client side ---------------------------------------------------------------------

MALFORMED_SERVER_FIRST = {
    "empty": b"",
    "mandatory extension": b"m=x," + RFC_SERVER_FIRST,
    "nonce not extending ours": b"r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "nonce not extended": b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "no salt": RFC_SERVER_FIRST.replace(b"s=W22ZaJ0SNY7soEsUEjb6gQ==,", b""),
    "empty salt": RFC_SERVER_FIRST.replace(b"W22ZaJ0SNY7soEsUEjb6gQ==", b""),
    "salt not base64": RFC_SERVER_FIRST.replace(b"W22ZaJ0SNY7soEsUEjb6gQ==", b"W22ZaJ0SNY7soEsUEjb6gQ"),
    "iterations zero": RFC_SERVER_FIRST.replace(b"i=4096", b"i=0"),
    "iterations negative": RFC_SERVER_FIRST.replace(b"i=4096", b"i=-1"),
    "iterations not a number": RFC_SERVER_FIRST.replace(b"i=4096", b"i=4k"),
    "iterations non-ASCII digits": RFC_SERVER_FIRST.replace(b"i=4096", "i=٤٠٩٦".encode()),
    "iterations above our limit": RFC_SERVER_FIRST.replace(b"i=4096", b"i=1000001"),
    "iterations absurd": RFC_SERVER_FIRST.replace(b"i=4096", b"i=" + b"9" * 20),
    "extension without value": RFC_SERVER_FIRST + b",x=",
    "invalid UTF-8": RFC_SERVER_FIRST + b",x=\xff",
}


@pytest.mark.parametrize("message", MALFORMED_SERVER_FIRST.values(), ids=MALFORMED_SERVER_FIRST.keys())
def test_client_refuses_malformed_server_first(message):
    client = ScramSha256Client("user", "pencil", nonce=RFC_CLIENT_NONCE)
    client.start()
    with pytest.raises(SaslError):
        client.step(message)
    with pytest.raises(SaslError):
        client.step(RFC_SERVER_FIRST)


MALFORMED_SERVER_FINAL = {
    "server error": b"e=invalid-proof",
    "wrong signature": b"v=" + base64.b64encode(bytes(32)),
    "empty": b"",
    "not base64": b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
    "mandatory extension": RFC_SERVER_FINAL + b",m=x",
}


@pytest.mark.parametrize("message", MALFORMED_SERVER_FINAL.values(), ids=MALFORMED_SERVER_FINAL.keys())
def test_client_refuses_bad_server_final(message):
    client = ScramSha256Client("user", "pencil", nonce=RFC_CLIENT_NONCE)
    client.start()
    client.step(RFC_SERVER_FIRST)
    with pytest.raises(SaslError):
        client.step(message)
    assert not client.done


@pytest.mark.parametrize(
    "username, password, kwargs",
    [
        ("", "pw", {}),
        ("\u00ad", "pw", {}),
        ("a\u0007b", "pw", {}),
        ("user", "", {}),
        ("user", "\u00ad", {}),
        ("user", "\ud800", {}),
        ("user", "pw", {"gs2_flag": "p=tls-unique"}),
        ("user", "pw", {"nonce": "a,b"}),
    ],
)
def test_client_refuses_unusable_arguments(username, password, kwargs):
    with pytest.raises(ValueError):
        ScramSha256Client(username, password, **kwargs)


# --- Fuzzing: step() raises SaslError and nothing else --------------------------------

def fresh_server():
    return rfc_server()


INTERESTING = [
    *(b",", b"=", b"==", b"=2C", b"=3D", b"n=", b"r=", b"m=", b"p=", b"c=", b"a=", b"biws"),
    *(b"\x00", b"\xff", b"\xc2\xad", b"\xd8\xa7", RFC_NONCE.encode()),
]
mutation = st.tuples(
    st.sampled_from(["insert", "delete", "replace"]),
    st.floats(min_value=0, max_value=1),
    st.one_of(st.sampled_from(INTERESTING), st.binary(max_size=6)),
)


def mutate(raw, mutations):
    for operation, where, payload in mutations:
        pos = int(where * len(raw))
        if operation == "insert":
            raw = raw[:pos] + payload + raw[pos:]
        elif operation == "delete":
            raw = raw[:pos] + raw[pos + len(payload) + 1 :]
        else:
            raw = raw[:pos] + payload + raw[pos + len(payload) :]
    return raw


def step_or_sasl_error(server, message):
    try:
        reply = server.step(message)
    except SaslError:
        assert_dead(server)
        return None
    assert reply is None or isinstance(reply, bytes)
    return reply


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_client_first_arbitrary_bytes(message):
    step_or_sasl_error(fresh_server(), message)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, max_size=8))
def test_fuzz_client_first_mutated(mutations):
    step_or_sasl_error(fresh_server(), mutate(RFC_CLIENT_FIRST, mutations))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_client_final_arbitrary_bytes(message):
    server = fresh_server()
    server.step(RFC_CLIENT_FIRST)
    step_or_sasl_error(server, message)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=8))
def test_fuzz_client_final_mutated(mutations):
    server = fresh_server()
    server.step(RFC_CLIENT_FIRST)
    message = mutate(RFC_CLIENT_FINAL, mutations)
    reply = step_or_sasl_error(server, message)
    if reply is not None:  # only a message equal to the valid one may pass
        assert message == RFC_CLIENT_FINAL


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_fuzz_acknowledgement(message):
    server = fresh_server()
    server.step(RFC_CLIENT_FIRST)
    server.step(RFC_CLIENT_FINAL)
    assert step_or_sasl_error(server, message) is None
    assert server.done == (message == b"")


def mutated_server_first(mutations):
    return mutate(RFC_SERVER_FIRST, mutations)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), st.lists(mutation, max_size=8).map(mutated_server_first)))
def test_fuzz_client_server_first(message):
    client = ScramSha256Client("user", "pencil", nonce=RFC_CLIENT_NONCE, max_iterations=4096)
    client.start()
    try:
        assert isinstance(client.step(message), bytes)
    except SaslError:
        pass


# --- SASLprep (RFC 4013) -------------------------------------------------------------

SASLPREP = [
    # RFC 4013 §3 examples
    ("I\u00adX", "IX"),
    ("user", "user"),
    ("USER", "USER"),
    ("\u00aa", "a"),
    ("\u2168", "IX"),
    # mapping and normalisation
    ("a\u00a0b", "a b"),
    ("a\u3000b", "a b"),
    ("a\u200bb", "ab"),  # in both B.1 and C.1.2: mapped to nothing
    ("\ufb01", "fi"),
    ("e\u0301", "\u00e9"),
    ("", ""),
    ("\u00ad", ""),
    ("\u0627\u0628", "\u0627\u0628"),  # right-to-left only
    ("\u0627 1 \u0628", "\u0627 1 \u0628"),  # neutral characters inside are fine
]


@pytest.mark.parametrize("text, prepared", SASLPREP)
def test_saslprep(text, prepared):
    assert saslprep(text) == prepared
    assert saslprep(text, allow_unassigned=True) == prepared


SASLPREP_ERRORS = {
    "ASCII control (RFC 4013 §3)": "\u0007",
    "bidi: RandALCat then digit (RFC 4013 §3)": "\u06271",
    "bidi: mixed directions": "\u0627a\u0628",
    "bidi: starts left-to-right": "a\u0627",
    "DEL": "a\u007fb",
    "non-ASCII control": "a\u0085b",
    "private use": "\ue000",
    "non-character": "\ufdd0",
    "lone surrogate": "\ud800",
    "inappropriate for plain text": "\ufff9",
    "ideographic description": "\u2ff0",
    "change display direction": "a\u200eb",
    "tagging character": "\U000e0001",
}


@pytest.mark.parametrize("text", SASLPREP_ERRORS.values(), ids=SASLPREP_ERRORS.keys())
def test_saslprep_refuses_prohibited_input(text):
    with pytest.raises(ValueError):
        saslprep(text)
    with pytest.raises(ValueError):
        saslprep(text, allow_unassigned=True)


@pytest.mark.parametrize("text", ["\u0221", "key\U0001f511"])  # both unassigned in Unicode 3.2
def test_saslprep_unassigned_code_points(text):
    with pytest.raises(ValueError, match="unassigned"):
        saslprep(text)
    assert saslprep(text, allow_unassigned=True) == text


# --- Stored credentials --------------------------------------------------------------


@pytest.mark.parametrize(
    "password, iterations, salt",
    [
        ("pencil", 4096, RFC_SALT),
        ("pässwörd", 1, b"\x00"),
        ("key\U0001f511", 10000, bytes(range(32))),
    ],
)
def test_make_and_parse_credentials_round_trip(password, iterations, salt):
    stored = make_scram_credentials(password, iterations=iterations, salt=salt)
    assert stored.startswith(f"SCRAM-SHA-256${iterations}:{base64.b64encode(salt).decode()}$")
    credentials = parse_scram_credentials(stored)
    assert (credentials.iterations, credentials.salt) == (iterations, salt)
    assert len(credentials.stored_key) == len(credentials.server_key) == 32
    assert format_scram_credentials(credentials) == stored


def test_make_credentials_draws_a_fresh_salt():
    first, second = (parse_scram_credentials(make_scram_credentials("pencil")) for _ in range(2))
    assert len(first.salt) == len(second.salt) == 16
    assert first.salt != second.salt
    assert first.iterations == 4096


@pytest.mark.parametrize(
    "one, other",
    [("I\u00adX", "IX"), ("a\u00a0b", "a b"), ("\u2168", "IX"), ("\u00aa", "a")],
)
def test_credentials_are_made_from_the_saslprepped_password(one, other):
    assert make_scram_credentials(one, salt=RFC_SALT) == make_scram_credentials(other, salt=RFC_SALT)


@pytest.mark.parametrize(
    "password, kwargs",
    [
        ("", {}),
        ("\u00ad", {}),  # empty once prepared
        ("\ud800", {}),  # cannot be encoded
        ("pencil", {"salt": b""}),
        ("pencil", {"iterations": 0}),
        ("pencil", {"iterations": -1}),
    ],
)
def test_make_credentials_refuses(password, kwargs):
    with pytest.raises(ValueError):
        make_scram_credentials(password, **kwargs)


_SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
_KEYS = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
MALFORMED_STORED = {
    "empty": "",
    "other mechanism": f"SCRAM-SHA-1$4096:{_SALT}${_KEYS}",
    "lower-case mechanism": f"scram-sha-256$4096:{_SALT}${_KEYS}",
    "Django hash": "pbkdf2_sha256$600000$salt$hash",
    "no keys": f"SCRAM-SHA-256$4096:{_SALT}",
    "one key": f"SCRAM-SHA-256$4096:{_SALT}$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
    "no iterations": f"SCRAM-SHA-256${_SALT}${_KEYS}",
    "zero iterations": f"SCRAM-SHA-256$0:{_SALT}${_KEYS}",
    "leading zero": f"SCRAM-SHA-256$04096:{_SALT}${_KEYS}",
    "negative iterations": f"SCRAM-SHA-256$-1:{_SALT}${_KEYS}",
    "non-ASCII digits": f"SCRAM-SHA-256$٤٠٩٦:{_SALT}${_KEYS}",
    "iterations too large": f"SCRAM-SHA-256$9999999999:{_SALT}${_KEYS}",
    "empty salt": f"SCRAM-SHA-256$4096:${_KEYS}",
    "salt unpadded": f"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ${_KEYS}",
    "salt non-canonical": f"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gR==${_KEYS}",
    "key too short": f"SCRAM-SHA-256$4096:{_SALT}$AAAA:AAAA",
    "key not base64": f"SCRAM-SHA-256$4096:{_SALT}$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY*:AAAA",
    "trailing newline": f"SCRAM-SHA-256$4096:{_SALT}${_KEYS}\n",
    "leading space": f" SCRAM-SHA-256$4096:{_SALT}${_KEYS}",
    "extra field": f"SCRAM-SHA-256$4096:{_SALT}${_KEYS}$x",
}


@pytest.mark.parametrize("text", MALFORMED_STORED.values(), ids=MALFORMED_STORED.keys())
def test_parse_credentials_refuses_malformed(text):
    with pytest.raises(ValueError):
        parse_scram_credentials(text)


# --- PLAIN, LOGIN and framing ---------------------------------------------------------

PLAIN = [
    (b"\0user\0pencil", ("", "user", "pencil")),
    (b"admin\0user\0pencil", ("admin", "user", "pencil")),
    (b"\0alice@example.test\0 spaces kept ", ("", "alice@example.test", " spaces kept ")),
    ("\0jörg\0pässwörd".encode(), ("", "jörg", "pässwörd")),
    ("\0I\u00adX\0I\u00adX".encode(), ("", "I\u00adX", "I\u00adX")),  # returned as sent
]


@pytest.mark.parametrize("message, expected", PLAIN)
def test_decode_plain(message, expected):
    assert decode_plain(message) == expected


MALFORMED_PLAIN = {
    "empty": b"",
    "no NUL": b"userpencil",
    "one NUL": b"user\0pencil",
    "extra NUL in password": b"\0user\0pen\0cil",
    "extra NUL at the end": b"\0user\0pencil\0",
    "empty authcid": b"\0\0pencil",
    "empty password": b"\0user\0",
    "only NULs": b"\0\0",
    "invalid UTF-8 in authcid": b"\0us\xffer\0pencil",
    "invalid UTF-8 in password": b"\0user\0pen\xc3",
    "invalid UTF-8 in authzid": b"\xc0\x80\0user\0pencil",
    "oversized": b"\0user\0" + b"x" * MAX_MESSAGE_OCTETS,
}


@pytest.mark.parametrize("message", MALFORMED_PLAIN.values(), ids=MALFORMED_PLAIN.keys())
def test_decode_plain_refuses_malformed(message):
    with pytest.raises(SaslError):
        decode_plain(message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_fuzz_decode_plain(message):
    try:
        authzid, authcid, password = decode_plain(message)
    except SaslError:
        return
    assert authcid and password
    assert message == b"\0".join(part.encode() for part in (authzid, authcid, password))


def test_login_challenges():
    assert login_challenges() == (b"Username:", b"Password:")
    assert [encode_challenge(prompt) for prompt in login_challenges()] == [b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"]


DECODE_RESPONSE = [
    # line, initial, decoded
    (b"dXNlcg==", False, b"user"),
    (b"AHVzZXIAcGVuY2ls", True, b"\0user\0pencil"),
    (b"", False, b""),
    (b"=", True, b""),  # RFC 4954 §4: empty initial response
]


@pytest.mark.parametrize("line, initial, decoded", DECODE_RESPONSE)
def test_decode_response(line, initial, decoded):
    assert decode_response(line, initial=initial) == decoded


@pytest.mark.parametrize("initial", [False, True])
def test_decode_response_star_aborts(initial):
    with pytest.raises(SaslAborted):
        decode_response(b"*", initial=initial)
    assert issubclass(SaslAborted, SaslError)


@pytest.mark.parametrize(
    "line", [b"=", b"dXNlcg", b"dXNl cg==", b"dXNlcg==\r\n", b"dXNlch==", b"dXNlcg===", b"**", b"\xff"]
)
def test_decode_response_refuses_bad_base64(line):
    with pytest.raises(SaslError) as caught:
        decode_response(line)
    assert not isinstance(caught.value, SaslAborted)

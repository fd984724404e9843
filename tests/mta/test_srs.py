"""Sender Rewriting Scheme: pure tests, no database.

Three forwarders take part: fwd1.test (the first hop, our usual `srs`), fwd2.test and
fwd3.test (later hops), each with its own secret.
"""
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mta.srs import SRS, SRSError

DAY = 86400
# 2024-01-01 00:00 UTC: day 19723, 19723 % 1024 == 267 == 8 * 32 + 11 -> "IL"
NOW = 19723 * DAY
TODAY = "IL"


class FakeClock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now

    def advance_days(self, days):
        self.now += days * DAY


def make_srs(secret=b"first secret", domain="fwd1.test", **options):
    options.setdefault("clock", FakeClock())
    return SRS(secret, domain=domain, **options)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def srs(clock):
    return make_srs(clock=clock)


def hash_of(address):
    """The hash field of an SRS0 or SRS1 address."""
    return address.split("=")[1]


def with_hash(address, new_hash):
    tag, _, rest = address.partition("=")
    return f"{tag}={new_hash}={rest.partition('=')[2]}"


# -- forward -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender, expected",
    [
        ("alice@example.org", f"SRS0=HHHH={TODAY}=example.org=alice@fwd1.test"),
        ("a.b-c+tag@example.org", f"SRS0=HHHH={TODAY}=example.org=a.b-c+tag@fwd1.test"),
        ("x=y==z@example.org", f"SRS0=HHHH={TODAY}=example.org=x=y==z@fwd1.test"),
        ("Alice@Example.ORG", f"SRS0=HHHH={TODAY}=Example.ORG=Alice@fwd1.test"),
        ("δοκιμή@παράδειγμα.δοκιμή", f"SRS0=HHHH={TODAY}=παράδειγμα.δοκιμή=δοκιμή@fwd1.test"),
        ("srs0-fan@example.org", f"SRS0=HHHH={TODAY}=example.org=srs0-fan@fwd1.test"),
        ("SRS0=not-srs@example.org", f"SRS0=HHHH={TODAY}=example.org=SRS0=not-srs@fwd1.test"),
        ("SRS0=hash=!!=example.net=bob@x.test", f"SRS0=HHHH={TODAY}=x.test=SRS0=hash=!!=example.net=bob@fwd1.test"),
    ],
)
def test_it_wraps_senders_in_srs0(srs, sender, expected):
    rewritten = srs.forward(sender)

    assert with_hash(rewritten, "HHHH") == expected
    assert re.fullmatch(r"[A-Za-z0-9+/]{4}", hash_of(rewritten))
    assert srs.reverse(rewritten) == sender


@pytest.mark.parametrize(
    "sender, why",
    [
        ("", "the null sender is never rewritten"),
        ("bob@fwd1.test", "our own domain already passes SPF"),
        ("bob@FWD1.Test", "domains compare case-insensitively"),
        ("SRS1=abcd=fwd2.test==x@Fwd1.Test", "already ours"),
        ("SRS0=abcd=IL=example.org=alice@fwd1.test", "already ours"),
        ('"alice smith"@example.org', "quoted local part"),
        ('"a"@example.org', "quoted local part"),
        ("alice..smith@example.org", "not a dot-string"),
        (".alice@example.org", "not a dot-string"),
        ("alice.@example.org", "not a dot-string"),
        ("ali ce@example.org", "not a dot-string"),
        ("alice@[192.0.2.1]", "address literal"),
        ("alice@example.org.", "trailing dot"),
        ("alice@exa=mple.org", "domain with the field separator"),
        ("alice@-example.org", "not a domain"),
        ("@example.org", "empty local part"),
        ("alice@", "empty domain"),
        ("alice", "no domain at all"),
        ("alice\udc80@example.org", "not encodable as UTF-8"),
        ("a" * 220 + "@example.org", "255 octets once rewritten, over the RFC 5321 path limit"),
        ("é" * 110 + "@example.org", "255 octets once rewritten: the limit is in octets"),
    ],
)
def test_it_leaves_senders_it_must_not_or_cannot_rewrite(srs, sender, why):
    assert srs.forward(sender) == sender, why


def test_it_rewrites_up_to_254_octets(srs):
    sender = "a" * 219 + "@example.org"

    rewritten = srs.forward(sender)

    assert len(rewritten) == 254
    assert srs.reverse(rewritten) == sender


def test_it_still_rewrites_when_the_local_part_exceeds_64_octets(srs):
    sender = "a" * 64 + "@example.org"

    rewritten = srs.forward(sender)

    assert len(rewritten.partition("@")[0]) > 64
    assert srs.reverse(rewritten) == sender


@pytest.mark.parametrize("separator", ["=", "+", "-"])
def test_it_uses_the_configured_separator_after_the_tag_only(clock, separator):
    srs = make_srs(separator=separator, clock=clock)

    rewritten = srs.forward("alice@example.org")

    expected = rf"SRS0{re.escape(separator)}[A-Za-z0-9+/]{{4}}={TODAY}=example\.org=alice@fwd1\.test"
    assert re.fullmatch(expected, rewritten)
    assert srs.reverse(rewritten) == "alice@example.org"


# -- SRS1 ----------------------------------------------------------------------------------


def test_it_turns_another_forwarders_srs0_into_srs1(srs):
    fwd2 = make_srs(b"second secret", "fwd2.test")
    srs0 = srs.forward("alice@example.org")
    opaque = srs0.partition("@")[0].removeprefix("SRS0")

    srs1 = fwd2.forward(srs0)

    assert srs1 == f"SRS1={hash_of(srs1)}=fwd1.test={opaque}@fwd2.test"
    assert srs1.startswith("SRS1=") and "=fwd1.test==" in srs1
    assert fwd2.reverse(srs1) == srs0
    assert srs.reverse(fwd2.reverse(srs1)) == "alice@example.org"


def test_it_keeps_the_first_forwarder_when_srs1_is_forwarded_again(srs):
    fwd2 = make_srs(b"second secret", "fwd2.test")
    fwd3 = make_srs(b"third secret", "fwd3.test")
    srs0 = srs.forward("alice@example.org")
    srs1_at_fwd2 = fwd2.forward(srs0)

    srs1_at_fwd3 = fwd3.forward(srs1_at_fwd2)

    # Same opaque part, same first forwarder, only the hash and our domain change: the
    # address does not grow, and the bounce skips fwd2.
    assert with_hash(srs1_at_fwd3, "H").removesuffix("@fwd3.test") == (
        with_hash(srs1_at_fwd2, "H").removesuffix("@fwd2.test")
    )
    assert hash_of(srs1_at_fwd3) != hash_of(srs1_at_fwd2)
    assert fwd3.reverse(srs1_at_fwd3) == srs0


@pytest.mark.parametrize("first_separator", ["=", "+", "-"])
def test_it_keeps_the_first_forwarders_separator(first_separator):
    fwd1 = make_srs(separator=first_separator)
    fwd2 = make_srs(b"second secret", "fwd2.test")
    srs0 = fwd1.forward("alice@example.org")

    srs1 = fwd2.forward(srs0)

    assert f"=fwd1.test={first_separator}" in srs1
    assert fwd2.reverse(srs1) == srs0


def test_it_recognises_foreign_srs_tags_in_any_case(srs):
    fwd2 = make_srs(b"second secret", "fwd2.test")
    srs0 = srs.forward("alice@example.org")

    srs1 = fwd2.forward(srs0.replace("SRS0=", "srs0=", 1))

    assert srs1.startswith("SRS1=")
    assert fwd2.reverse(srs1) == srs0


def test_a_bounce_to_our_srs1_of_our_own_srs0_comes_home(srs):
    fwd2 = make_srs(b"second secret", "fwd2.test")
    srs1_at_fwd2 = fwd2.forward(srs.forward("alice@example.org"))

    # The message is forwarded back through us: SRS1 pointing at ourselves still works.
    srs1_at_us = srs.forward(srs1_at_fwd2)

    assert srs.reverse(srs.reverse(srs1_at_us)) == "alice@example.org"


# -- reverse: hash, case, keys --------------------------------------------------------------


def test_it_refuses_a_wrong_hash(srs):
    rewritten = srs.forward("alice@example.org")
    forged = with_hash(rewritten, "AAAA" if hash_of(rewritten) != "AAAA" else "BBBB")

    with pytest.raises(SRSError, match="^SRS address has an invalid signature$"):
        srs.reverse(forged)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda a: a.replace("=alice@", "=mallory@"),
        lambda a: a.replace("=example.org=", "=evil.test="),
        lambda a: a.replace("=example.org=alice", "=example.co=malice"),
        lambda a: a.replace(f"={TODAY}=", "=IM="),
        lambda a: with_hash(a, hash_of(a)[:3]),
        lambda a: with_hash(a, hash_of(a) + "A"),
    ],
)
def test_it_refuses_any_tampered_field(srs, tamper):
    rewritten = srs.forward("alice@example.org")

    with pytest.raises(SRSError, match="^SRS address has an invalid signature$"):
        srs.reverse(tamper(rewritten))


def test_it_refuses_an_srs1_from_another_secret(srs):
    fwd2 = make_srs(b"second secret", "fwd2.test")
    impostor = make_srs(b"not fwd2's secret", "fwd2.test")
    srs0 = srs.forward("alice@example.org")

    with pytest.raises(SRSError, match="invalid signature"):
        fwd2.reverse(impostor.forward(srs0))


def test_an_srs0_hash_does_not_pass_as_srs1(srs):
    srs0 = srs.forward("alice@example.org")
    relabelled = srs0.replace("SRS0=", "SRS1=", 1)

    with pytest.raises(SRSError):
        srs.reverse(relabelled)


@pytest.mark.parametrize("change_case", [str.lower, str.upper, str.swapcase])
def test_it_accepts_addresses_whose_case_was_changed(srs, change_case):
    rewritten = srs.forward("alice@example.org")

    assert srs.reverse(change_case(rewritten)).lower() == "alice@example.org"


@pytest.mark.parametrize("change_case", [str.lower, str.upper])
def test_it_accepts_srs1_whose_case_was_changed(srs, change_case):
    fwd2 = make_srs(b"second secret", "fwd2.test")
    srs0 = srs.forward("alice@example.org")

    bounce_to = fwd2.reverse(change_case(fwd2.forward(srs0)))

    assert bounce_to.lower() == srs0.lower()
    assert srs.reverse(bounce_to) == change_case("alice@example.org")


def test_it_accepts_old_secrets_but_signs_with_the_current_one(clock):
    before = make_srs(b"old secret", clock=clock)
    after = make_srs(b"new secret", clock=clock, old_secrets=(b"older secret", b"old secret"))
    new_only = make_srs(b"new secret", clock=clock)
    issued_before_rotation = before.forward("alice@example.org")

    assert after.reverse(issued_before_rotation) == "alice@example.org"
    assert after.forward("alice@example.org") == new_only.forward("alice@example.org")
    with pytest.raises(SRSError, match="invalid signature"):
        new_only.reverse(issued_before_rotation)


# -- reverse: expiry -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "days_later, valid",
    [(0, True), (1, True), (21, True), (22, False), (500, False), (1023, False), (1024, True)],
)
def test_it_expires_after_max_age_days(srs, clock, days_later, valid):
    rewritten = srs.forward("alice@example.org")

    clock.advance_days(days_later)

    if valid:
        assert srs.reverse(rewritten) == "alice@example.org"
    else:
        with pytest.raises(SRSError, match="^SRS address has expired$"):
            srs.reverse(rewritten)


def test_the_expiry_boundary_is_the_last_second_of_the_last_day(clock):
    clock.now = NOW + DAY - 1  # the last second of the day the address is issued
    srs = make_srs(clock=clock, max_age_days=3)
    rewritten = srs.forward("alice@example.org")

    clock.now = NOW + 4 * DAY - 1  # the last second of day 3 after: still valid
    assert srs.reverse(rewritten) == "alice@example.org"
    clock.now = NOW + 4 * DAY  # the first second of day 4 after
    with pytest.raises(SRSError, match="expired"):
        srs.reverse(rewritten)


def test_it_expires_across_the_1024_day_wrap(clock):
    clock.now = 1023 * DAY  # timestamp "77", the last slot
    srs = make_srs(clock=clock)
    rewritten = srs.forward("alice@example.org")
    assert "=77=" in rewritten

    clock.advance_days(5)  # today's slot is 4
    assert srs.reverse(rewritten) == "alice@example.org"
    clock.advance_days(17)
    with pytest.raises(SRSError, match="expired"):
        srs.reverse(rewritten)


def test_it_treats_a_timestamp_from_the_future_as_expired(srs, clock):
    clock.advance_days(1)
    tomorrow = srs.forward("alice@example.org")
    clock.advance_days(-1)

    with pytest.raises(SRSError, match="expired"):
        srs.reverse(tomorrow)


@pytest.mark.parametrize("days, timestamp", [(0, "AA"), (1, "AB"), (31, "A7"), (32, "BA"), (1023, "77"), (1024, "AA")])
def test_the_timestamp_is_two_base32_characters_of_the_day(clock, days, timestamp):
    clock.now = days * DAY + 1234
    srs = make_srs(clock=clock)

    assert srs.forward("alice@example.org").split("=")[2] == timestamp


# -- reverse: malformed --------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, message",
    [
        ("alice@fwd1.test", "Not an SRS address of this domain"),
        ("SRS0=abcd=IL=example.org=alice@elsewhere.test", "Not an SRS address of this domain"),
        ("SRS2=abcd=IL=example.org=alice@fwd1.test", "Not an SRS address of this domain"),
        ("SRS0_abcd=IL=example.org=alice@fwd1.test", "Not an SRS address of this domain"),
        ("SRS0=abcd=IL=example.org=alice", "Not an SRS address of this domain"),
        ("", "Not an SRS address of this domain"),
        ("\u017frs0=abcd=IL=example.org=alice@fwd1.test", "Not an SRS address of this domain"),
        ("SRS0=abcd=IL=example.org=alice@fwd1.tes\u212a", "Not an SRS address of this domain"),
        ("SRS0=abcd=\u0131L=example.org=alice@fwd1.test", "Malformed SRS address"),
        ("SRS0=abcd=IL=example.org@fwd1.test", "Malformed SRS address"),
        ("SRS0=abcd=IL==alice@fwd1.test", "Malformed SRS address"),
        ("SRS0=abcd=IL=example.org=@fwd1.test", "Malformed SRS address"),
        ("SRS0==IL=example.org=alice@fwd1.test", "Malformed SRS address"),
        ("SRS0=abcd=I1=example.org=alice@fwd1.test", "Malformed SRS address"),
        ("SRS0=abcd=ILL=example.org=alice@fwd1.test", "Malformed SRS address"),
        ("SRS1=abcd=fwd9.test@fwd1.test", "Malformed SRS address"),
        ("SRS1=abcd=fwd9.test=@fwd1.test", "Malformed SRS address"),
        ("SRS1=abcd=fwd9.test=xyz@fwd1.test", "Malformed SRS address"),
        ("SRS1=abcd=fwd9.test==@fwd1.test", "Malformed SRS address"),
        ("SRS1=abcd==x@fwd1.test", "Malformed SRS address"),
        ("SRS0=ab\udc80d=IL=example.org=alice@fwd1.test", "Malformed SRS address"),
        ("SRS0=abcd=IL=example.org=alice@fwd1.test", "SRS address has an invalid signature"),
        ("SRS0=abcé=IL=example.org=alice@fwd1.test", "SRS address has an invalid signature"),
        ("SRS1=abcd=fwd9.test==x@fwd1.test", "SRS address has an invalid signature"),
    ],
)
def test_it_refuses_malformed_addresses(srs, address, message):
    with pytest.raises(SRSError) as raised:
        srs.reverse(address)

    assert str(raised.value) == message


def test_error_texts_never_echo_the_address(srs):
    with pytest.raises(SRSError) as raised:
        srs.reverse("SRS0=abcd=IL=example.org=al\r\nice@fwd1.test")

    assert "\r" not in str(raised.value) and "\n" not in str(raised.value)
    assert "ice" not in str(raised.value)


@pytest.mark.parametrize(
    "address, expected",
    [
        ("SRS0=abcd=IL=example.org=alice@fwd1.test", True),
        ("srs0+abcd=IL=example.org=alice@FWD1.TEST", True),
        ("SRS1-abcd=fwd2.test==x@fwd1.test", True),
        ("SRS0=garbage@fwd1.test", True),  # looks like one; reverse() decides
        ("SRS0=abcd=IL=example.org=alice@fwd2.test", False),
        ("alice@fwd1.test", False),
        ("SRS0@fwd1.test", False),
        ("SRS2=abcd@fwd1.test", False),
        ("", False),
    ],
)
def test_is_srs_recognises_our_srs_addresses(srs, address, expected):
    assert srs.is_srs(address) is expected


def test_is_srs_is_true_of_what_forward_produces(srs):
    fwd2 = make_srs(b"second secret", "fwd2.test")
    srs0 = srs.forward("alice@example.org")

    assert srs.is_srs(srs0)
    assert fwd2.is_srs(fwd2.forward(srs0))
    assert not fwd2.is_srs(srs0)


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret, options",
    [
        (b"", {}),
        ("text", {}),
        (b"k", {"old_secrets": (b"",)}),
        (b"k", {"domain": ""}),
        (b"k", {"domain": "[192.0.2.1]"}),
        (b"k", {"domain": "fwd=1.test"}),
        (b"k", {"max_age_days": 0}),
        (b"k", {"max_age_days": 1024}),
        (b"k", {"hash_length": 3}),
        (b"k", {"hash_length": 28}),
        (b"k", {"separator": "_"}),
        (b"k", {"separator": "=+"}),
        (b"k", {"separator": ""}),
    ],
)
def test_it_refuses_bad_configuration(secret, options):
    options = {"domain": "fwd1.test", **options}

    with pytest.raises(ValueError):
        SRS(secret, **options)


@pytest.mark.parametrize("hash_length", [4, 8, 27])
def test_hash_length_is_configurable(clock, hash_length):
    srs = make_srs(clock=clock, hash_length=hash_length)

    rewritten = srs.forward("alice@example.org")

    assert len(hash_of(rewritten)) == hash_length
    assert srs.reverse(rewritten) == "alice@example.org"
    with pytest.raises(SRSError, match="invalid signature"):
        make_srs(clock=clock, hash_length=hash_length + 1 if hash_length < 27 else 4).reverse(rewritten)


# -- properties ----------------------------------------------------------------------------

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
atoms = st.text(st.one_of(st.sampled_from(ATEXT), st.sampled_from("éüßδж例え😀")), min_size=1, max_size=8)
local_parts = st.lists(atoms, min_size=1, max_size=3).map(".".join)
labels = st.text(st.sampled_from("abcxyzABC019-éü例"), min_size=1, max_size=10).filter(
    lambda label: not label.startswith("-") and not label.endswith("-")
)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join)
# RFC 5321 §4.1.2 Dot-string with RFC 6531 UTF8-non-ascii: sendable without quoting.
ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+"
DOT_STRING = re.compile(rf"{ATOM}(\.{ATOM})*")


def looks_like_srs(local):
    return local[:4].upper() in ("SRS0", "SRS1") and local[4:5] in ("=", "+", "-")


@given(local=local_parts, domain=domains)
def test_property_reverse_undoes_forward(local, domain):
    assume(not looks_like_srs(local))
    srs = make_srs()
    sender = f"{local}@{domain}"

    rewritten = srs.forward(sender)

    assert rewritten != sender
    assert DOT_STRING.fullmatch(rewritten.partition("@")[0])
    assert srs.is_srs(rewritten)
    assert srs.reverse(rewritten) == sender


@given(local=local_parts, domain=domains, separator=st.sampled_from("=+-"))
def test_property_srs1_chains_reverse_to_the_first_forwarder(local, domain, separator):
    assume(not looks_like_srs(local))
    fwd1 = make_srs(separator=separator)
    fwd2 = make_srs(b"second secret", "fwd2.test")
    fwd3 = make_srs(b"third secret", "fwd3.test")
    sender = f"{local}@{domain}"
    srs0 = fwd1.forward(sender)

    srs1 = fwd2.forward(srs0)
    srs1_again = fwd3.forward(srs1)

    assert srs1.startswith("SRS1=") and srs1_again.startswith("SRS1=")
    assert DOT_STRING.fullmatch(srs1_again.partition("@")[0])
    assert len(srs1_again) - len("fwd3.test") == len(srs1) - len("fwd2.test")
    assert fwd2.reverse(srs1) == srs0
    assert fwd3.reverse(srs1_again) == srs0
    assert fwd1.reverse(srs0) == sender


our_srs_garbage = st.builds(
    lambda tag, rest, domain: f"{tag}{rest}@{domain}",
    st.sampled_from(["SRS0=", "SRS1=", "srs0+", "SRS1-", "SRS0", ""]),
    st.text(st.one_of(st.sampled_from("=+-.@AIL7abc"), st.characters()), max_size=40),
    st.sampled_from(["fwd1.test", "FWD1.test", "fwd2.test", ""]),
)


@given(address=st.one_of(st.text(), our_srs_garbage))
def test_property_reverse_raises_only_srs_error(address):
    srs = make_srs()

    try:
        result = srs.reverse(address)
    except SRSError as error:
        assert "\n" not in str(error)
    else:
        pytest.fail(f"garbage {address!r} reversed to {result!r}")


@given(address=st.one_of(st.text(), our_srs_garbage, st.builds("{}@{}".format, st.text(), domains)))
def test_property_forward_never_raises_and_stays_sendable(address):
    srs = make_srs()

    rewritten = srs.forward(address)

    if rewritten != address:
        assert DOT_STRING.fullmatch(rewritten.partition("@")[0])
        assert len(rewritten.encode("utf-8")) <= 254
        assert srs.reverse(rewritten).lower() == address.lower()

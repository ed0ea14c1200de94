"""Address checks: the shortcut for addresses of the common shape decides exactly as the full
checks (email-validator, then the stdlib's header parser) do.

About 2,000 generated addresses per run, built to sit on the shortcut's edges (special-use and
numeric top-level domains, punycode labels, hyphens at label ends, the length limit, characters
just outside the plain set). For a longer run: `NOTIFY_PROPERTY_EXAMPLES=50000 pytest
tests/test_request_checks.py`.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notify_pipeline.errors import RejectReason
from notify_pipeline.request_checks import (
    FieldRejected,
    _checked,
    _domain_passes,
    _plain,
    _sendable,
)

EXAMPLES = int(os.environ.get("NOTIFY_PROPERTY_EXAMPLES", "2000"))

LOCAL_CHARS = "aZ09_+-." + "!#=?'{}~\"(),:;<>@[\\] " + "é"
LABEL_CHARS = "aZ09-" + "_*é"
TLDS = ("org", "uk", "COM", "local", "localhost", "test", "invalid", "example", "onion",
        "arpa", "123", "x", "xn--p1ai", "museum-")


def outcome(check, address: str) -> tuple[str, str]:
    try:
        return ("sent as", check("to[0]", address))
    except FieldRejected as exc:
        return (exc.reason.value, str(exc))


locals_ = st.one_of(
    st.text(LOCAL_CHARS, min_size=0, max_size=12),
    st.text("ab", min_size=60, max_size=70),
)
labels = st.one_of(
    st.text(LABEL_CHARS, min_size=0, max_size=10),
    st.just("xn--bcher-kva"),
    st.text("b", min_size=60, max_size=66),
)
domains = st.builds(lambda parts, tld: ".".join([*parts, tld]),
                    st.lists(labels, min_size=0, max_size=4), st.sampled_from(TLDS))
addresses = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", locals_, domains),
    st.builds(lambda local, domain: f"{local}@{domain}", st.text("ab", min_size=1, max_size=250),
              st.sampled_from(("example.org", "b" * 60 + ".example.org"))),
    st.text(LOCAL_CHARS + "@", max_size=30),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(addresses)
def test_the_shortcut_decides_as_the_full_checks_do(address: str) -> None:
    assert outcome(_sendable, address) == outcome(_checked, address)


@pytest.mark.parametrize("address", [
    "user-12345@example.ac.uk", "First.Last+tag@Example.ORG", "a_b@sub-1.example.com",
])
def test_common_addresses_take_the_shortcut(address: str) -> None:
    assert _plain(address)
    assert _sendable("to[0]", address) == address


@pytest.mark.parametrize("address", [
    "someone@printer.local",  # special-use domain
    "someone@example.123",  # numeric top-level domain
    "someone@-example.org",  # hyphen at a label's start
    "someone@" + "b" * 64 + ".example.org",  # label longer than 63
    ("a" * 200) + "@" + "b" * 60 + ".example.org",  # longer than 254
])
def test_what_the_full_checks_refuse_is_refused_with_their_reason(address: str) -> None:
    with pytest.raises(FieldRejected) as caught:
        _sendable("to[0]", address)
    assert caught.value.reason is RejectReason.MALFORMED
    assert str(caught.value) == outcome(_checked, address)[1]


def test_a_domain_is_checked_once_for_many_recipients() -> None:
    domain = "recipients-share-this.example.org"
    before = _domain_passes.cache_info()
    for i in range(50):
        assert _sendable("to[0]", f"person{i}@{domain}") == f"person{i}@{domain}"
    after = _domain_passes.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 49


def test_punycode_domains_take_the_full_checks() -> None:
    assert not _plain("someone@xn--bcher-kva.de")
    assert _sendable("to[0]", "someone@xn--bcher-kva.de") == "someone@xn--bcher-kva.de"

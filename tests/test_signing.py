"""DKIM: key store, OpenSSL-backed signing byte-identical to dkimpy, verification, errors."""

from __future__ import annotations

import multiprocessing
import pickle
import random
import re
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from notify_pipeline.dns import DnsRecord, dns_records, verify
from notify_pipeline.errors import ConfigError
from notify_pipeline.message import Attachment, Envelope
from notify_pipeline.mime import make_message_id_header, render
from notify_pipeline.signing import (
    CANONICALIZE,
    SIGNED_HEADERS,
    DkimKey,
    DkimKeyStore,
    DkimSigner,
    SigningError,
)

DOMAIN = "notify.example.org"
OTHER = "other.example.org"
SELECTOR = "notify1"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> DkimKeyStore:
    return DkimKeyStore(tmp_path_factory.mktemp("keys"), SELECTOR)


@pytest.fixture(scope="module")
def key(store: DkimKeyStore) -> DkimKey:
    return store.key_for(DOMAIN)


@pytest.fixture(scope="module")
def other_key(store: DkimKeyStore) -> DkimKey:
    return store.key_for(OTHER)


@pytest.fixture(scope="module")
def signer(key: DkimKey) -> DkimSigner:
    return DkimSigner(key)


@pytest.fixture(scope="module")
def records(key: DkimKey, other_key: DkimKey) -> list[DnsRecord]:
    return dns_records(domains=[DOMAIN, OTHER], keys=[key, other_key])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Sets the second dkimpy stamps into t= (it reads `time.time()` in `DKIM.sign`)."""
    now = [0.0]
    monkeypatch.setattr(time, "time", lambda: now[0])

    def set_now(seconds: int) -> None:
        now[0] = seconds + 0.75

    return set_now


def envelope(rng: random.Random, n: int) -> Envelope:
    words = ["Héllo", "wörld", "notice", "中文", "a,b", '"q"', "x" * 70, "résumé", "ok"]

    def phrase(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, k)))

    attachments = tuple(
        Attachment(
            f"{phrase(2)}.bin", "application/octet-stream", rng.randbytes(rng.randint(0, 3000))
        )
        for _ in range(rng.choice([0, 0, 1, 2]))
    )
    return Envelope(
        service="lookup-notices",
        message_id=f"msg-{n}",
        from_display=phrase(6),
        from_address=f"lookup+t{n}@{DOMAIN}",
        to=tuple(f"user{i}@example.org" for i in range(rng.randint(0, 12))),
        cc=tuple(f"cc{i}@example.org" for i in range(rng.choice([0, 0, 2]))),
        bcc=("hidden@example.org",),
        reply_to=("help@example.org",) if rng.random() < 0.5 else (),
        subject=phrase(30),
        text=phrase(200) + "\n\n\n" if rng.random() < 0.8 else None,
        html=f"<p>{phrase(50)}</p>  \n" if rng.random() < 0.5 else "<p>only</p>",
        headers=(("X-Long", phrase(40)),) if rng.random() < 0.5 else (),
        attachments=attachments,
    )


def rendered(env: Envelope) -> bytes:
    mid = make_message_id_header(env.service, env.message_id, DOMAIN)
    return render(env, date=datetime(2026, 11, 2, tzinfo=UTC), message_id_header=mid)


# Raw messages stress dkimpy's canonicalisation where our renderer never goes: odd case and
# whitespace, folded and duplicate headers, LF line ends, 8-bit headers, empty and padded bodies.
RAW_MESSAGES = [
    b"From: a@notify.example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
    b"FROM:   a@notify.example.org  \r\nsubject:\thello \t world\r\n\r\n",
    b"From: a@notify.example.org\nTo: b@example.org,\n\tc@example.org\nSubject: lf\n\nx \n\n\n",
    b"From: \xc3\xa9t\xc3\xa9 <a@notify.example.org>\r\nSubject: \xe4\xb8\xad\r\n\r\n\xff\xfe\r\n",
    b"From: a@notify.example.org\r\nTo: b@example.org\r\nTo: c@example.org\r\nCc: d@e.org\r\n"
    b"Reply-To: r@e.org\r\nX-Other: 1\r\n\r\n  leading  and trailing  \t\r\n\r\n",
    b"From: a@notify.example.org\r\nSubject: " + b"long " * 200 + b"\r\n\r\n" + b"y" * 5000,
]


def messages() -> Iterator[bytes]:
    rng = random.Random(6376)
    yield from RAW_MESSAGES
    for n in range(80):
        yield rendered(envelope(rng, n))


def dkimpy_reference(message: bytes, key: DkimKey) -> bytes:
    """Plain dkimpy with the same options: the PEM goes through dkimpy's own parser and RSA."""
    present = {line.split(b":", 1)[0].strip().lower() for line in _header_lines(message)}
    include = [name.encode() for name in SIGNED_HEADERS if name.encode() in present]
    header = dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key_pem,
        canonicalize=CANONICALIZE,
        include_headers=include,
    )
    return bytes(header) + message


def _header_lines(message: bytes) -> list[bytes]:
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    return [line for line in re.split(rb"\r?\n", head) if line[:1] not in (b" ", b"\t")]


def test_fast_signature_is_byte_identical_to_dkimpy(
    signer: DkimSigner, key: DkimKey, clock: Callable[[int], None]
) -> None:
    for n, message in enumerate(messages()):
        clock(1_790_000_000 + 977 * n)
        assert signer.sign(message) == dkimpy_reference(message, key), f"message {n}"


def test_fast_path_uses_openssl_not_dkimpy_rsa(
    signer: DkimSigner, key: DkimKey, records: list[DnsRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the seam: neither dkimpy's pure-Python key parser nor its RSA runs per message."""

    def forbidden(*args: object) -> None:
        raise AssertionError("dkimpy's pure-Python key handling was used")

    monkeypatch.setattr(dkim.crypto, "parse_private_key", forbidden)
    monkeypatch.setattr(dkim.crypto, "rsa_decrypt", forbidden)
    signed = signer.sign(RAW_MESSAGES[0])
    assert verify(signed, records)
    with pytest.raises(AssertionError, match="pure-Python"):
        dkimpy_reference(RAW_MESSAGES[0], key)


EXPECTED_SIGNED = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to"]
EXPECTED_SIGNED += [b"mime-version", b"content-type"]


def test_signature_tags(signer: DkimSigner) -> None:
    message = rendered(envelope(random.Random(1), 1))
    tags = dkim.util.parse_tag_value(dkim.DKIM(signer.sign(message)).headers[0][1])
    assert (tags[b"a"], tags[b"c"], tags[b"d"], tags[b"s"]) == (
        b"rsa-sha256",
        b"relaxed/relaxed",
        DOMAIN.encode(),
        SELECTOR.encode(),
    )
    signed_headers = re.split(rb"\s*:\s*", tags[b"h"].strip())
    present = {line.split(b":")[0].lower() for line in _header_lines(message)}
    assert signed_headers == [h for h in EXPECTED_SIGNED if h in present]
    assert {b"from", b"to", b"subject", b"date", b"message-id"} <= set(signed_headers)


def test_signed_message_verifies(signer: DkimSigner, records: list[DnsRecord]) -> None:
    for message in [*RAW_MESSAGES[:3], rendered(envelope(random.Random(2), 2))]:
        assert verify(signer.sign(message), records)


def test_mapping_of_records_is_accepted(signer: DkimSigner, records: list[DnsRecord]) -> None:
    as_mapping = {record.name: record.value for record in records if "_domainkey" in record.name}
    assert verify(signer.sign(RAW_MESSAGES[0]), as_mapping)


def test_unsigned_header_may_be_added(signer: DkimSigner, records: list[DnsRecord]) -> None:
    signed = signer.sign(RAW_MESSAGES[0])
    assert verify(b"Received: from relay\r\n" + signed, records)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"body\r\n", b"bodY\r\n"),
        (b"Subject: hi", b"Subject: hI"),
        (b"From: a@notify", b"From: b@notify"),
        (b"To: b@example.org", b"To: z@example.org"),
    ],
)
def test_tampering_breaks_verification(
    signer: DkimSigner, records: list[DnsRecord], old: bytes, new: bytes
) -> None:
    signed = signer.sign(RAW_MESSAGES[0])
    assert old in signed
    assert not verify(signed.replace(old, new, 1), records)


def test_another_domains_key_does_not_verify(
    key: DkimKey, other_key: DkimKey, records: list[DnsRecord]
) -> None:
    impostor = DkimKey(DOMAIN, SELECTOR, private_key_pem=other_key.private_key_pem)
    assert not verify(DkimSigner(impostor).sign(RAW_MESSAGES[0]), records)
    only_other = dns_records(domains=[OTHER], keys=[other_key])
    assert not verify(DkimSigner(key).sign(RAW_MESSAGES[0]), only_other)


def test_unsigned_message_does_not_verify(records: list[DnsRecord]) -> None:
    assert not verify(RAW_MESSAGES[0], records)


def test_signer_pickles_as_its_key(
    signer: DkimSigner, key: DkimKey, clock: Callable[[int], None]
) -> None:
    clock(1_790_000_000)
    copy = pickle.loads(pickle.dumps(signer))
    assert copy.key == key
    assert copy.sign(RAW_MESSAGES[0]) == signer.sign(RAW_MESSAGES[0])


def test_signer_works_in_worker_processes(signer: DkimSigner, records: list[DnsRecord]) -> None:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        signed = list(pool.map(signer.sign, RAW_MESSAGES))
    assert all(verify(message, records) for message in signed)


def test_key_material_stays_out_of_repr_and_errors(key: DkimKey, tmp_path: Path) -> None:
    pem_body = key.private_key_pem.decode().splitlines()[1]
    assert "PRIVATE" not in repr(key) and pem_body not in repr(key)
    broken = DkimKey(DOMAIN, SELECTOR, private_key_pem=key.private_key_pem[:-200])
    with pytest.raises(SigningError) as raised:
        DkimSigner(broken)
    assert pem_body not in str(raised.value)
    assert raised.value.__suppress_context__  # the parser's own message is not chained either


def test_message_without_from_cannot_be_signed(signer: DkimSigner) -> None:
    with pytest.raises(SigningError, match=r"notify\.example\.org"):
        signer.sign(b"To: b@example.org\r\nSubject: x\r\n\r\nbody\r\n")


def test_non_rsa_key_is_refused() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SigningError, match="not an RSA key"):
        DkimSigner(DkimKey(DOMAIN, SELECTOR, private_key_pem=pem))


def test_key_store_creates_a_private_key_file_once(tmp_path: Path) -> None:
    store = DkimKeyStore(tmp_path, SELECTOR)
    created = store.key_for("Notify.Example.Org.")
    path = tmp_path / "dkim" / f"{DOMAIN}.{SELECTOR}.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (created.domain, created.selector) == (DOMAIN, SELECTOR)
    assert created.private_key_pem == path.read_bytes()
    assert DkimKeyStore(tmp_path, SELECTOR).key_for(DOMAIN) == created
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_key_store_loads_an_existing_file(tmp_path: Path, key: DkimKey) -> None:
    path = tmp_path / "dkim" / f"{DOMAIN}.{SELECTOR}.pem"
    path.parent.mkdir()
    path.write_bytes(key.private_key_pem)
    assert DkimKeyStore(tmp_path, SELECTOR).key_for(DOMAIN) == key


def test_key_store_lists_keys_in_order(store: DkimKeyStore, key: DkimKey) -> None:
    keys = store.keys([OTHER, DOMAIN])
    assert [k.domain for k in keys] == [OTHER, DOMAIN] and keys[1] == key


def _key_in_fresh_process(keys_dir: Path) -> str:
    return DkimKeyStore(keys_dir, SELECTOR).key_for(DOMAIN).public_key_b64()


def test_racing_processes_end_up_with_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        public_keys = set(pool.map(_key_in_fresh_process, [tmp_path] * 8))
    assert len(public_keys) == 1
    assert [p.name for p in (tmp_path / "dkim").iterdir()] == [f"{DOMAIN}.{SELECTOR}.pem"]


@pytest.mark.parametrize("domain", ["../etc", "notify.example.org/x", "", "a..b", "-x.org"])
def test_key_store_refuses_unsafe_domains(tmp_path: Path, domain: str) -> None:
    with pytest.raises(SigningError, match="not a valid sending domain"):
        DkimKeyStore(tmp_path, SELECTOR).key_for(domain)


def test_key_store_refuses_a_bad_selector(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dkim_selector"):
        DkimKeyStore(tmp_path, "../x")


def test_generated_keys_are_rsa_2048(key: DkimKey) -> None:
    loaded = serialization.load_pem_private_key(key.private_key_pem, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey) and loaded.key_size == 2048

"""DKIM keys and fast DKIM signing (verification against our own records is in `dns`).

Speed: dkimpy does RSA in pure Python (6-12 ms per RSA-2048 signature on our 2-vCPU machines,
89% of it in `pow`); OpenSSL through `cryptography` is 4 to 25 times faster. `DkimSigner` keeps
dkimpy for everything that decides the bytes (parsing, canonicalisation, header selection, tag
order, folding) and hands only the RSA step to OpenSSL. `_install_openssl_dispatch` is the seam.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from notify_pipeline import files
from notify_pipeline.errors import ConfigError, NotifyError

# Signed when present, in this order (the h= tag). Absent ones are left out rather than
# "oversigned", so a relay that adds e.g. Cc to a message without one does not break it.
SIGNED_HEADERS: Final = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
)
_SIGNED_HEADERS_BYTES: Final = tuple(name.encode() for name in SIGNED_HEADERS)
CANONICALIZE: Final = (b"relaxed", b"relaxed")
KEY_BITS: Final = 2048

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_TOP_LABEL = r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?"  # e.g. org, xn--p1ai; never all digits
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)+{_TOP_LABEL}$")
_SELECTOR = re.compile(rf"^{_LABEL}$")


class SigningError(NotifyError):
    """A message could not be DKIM-signed, or a key could not be made or read.

    Messages name the domain, selector or file, never key material.
    """


@dataclass(frozen=True)
class DkimKey:
    """One domain's DKIM private key. The PEM is kept out of `repr` so it never reaches a log."""

    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)

    def public_key_b64(self) -> str:
        """The base64 DER SubjectPublicKeyInfo that goes in the DKIM TXT record's `p=` tag."""
        public_key = _load_private_key(self).public_key()
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")


class DkimKeyStore:
    """DKIM keys under `keys_dir/dkim/<domain>.<selector>.pem`, generated on first use.

    Creation is atomic and first-writer-wins: each process writes a complete key to a private
    temporary file and hard-links it into place; `link` fails if the name exists, and the loser
    loads the winner's key. Every process therefore signs with the key DNS will publish.
    """

    def __init__(self, keys_dir: Path, selector: str) -> None:
        if not _SELECTOR.match(selector):
            raise ConfigError("dkim_selector", f"{selector!r} is not one DNS label (a-z, 0-9, -)")
        self.directory = keys_dir / "dkim"
        self.selector = selector

    def key_for(self, domain: str) -> DkimKey:
        """The key for `domain`, created (RSA-2048, mode 0600) if there is none yet."""
        domain = _checked_domain(domain)
        path = self.directory / f"{domain}.{self.selector}.pem"
        if not path.exists():
            _create_key_file(path)
        key = DkimKey(domain=domain, selector=self.selector, private_key_pem=path.read_bytes())
        _load_private_key(key, where=str(path))  # fail here, naming the file, if it is unusable
        return key

    def keys(self, domains: Iterable[str]) -> list[DkimKey]:
        return [self.key_for(domain) for domain in domains]


def _checked_domain(domain: str) -> str:
    """The domain in lower case; refuses anything that is not a plain DNS name (it becomes a
    file name and the DKIM d= tag)."""
    normal = domain.lower().rstrip(".")
    if not _DOMAIN.match(normal):
        raise SigningError(f"{domain!r} is not a valid sending domain")
    return normal


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    files.create_once(path, pem, mode=files.PRIVATE)  # lost a race: the winner's key is used


def _load_private_key(key: DkimKey, where: str | None = None) -> rsa.RSAPrivateKey:
    """The parsed key, with errors that name `where` but never quote the PEM."""
    where = where or f"the DKIM key for {key.domain} (selector {key.selector})"
    try:
        private_key = _parse_pem(key.private_key_pem)
    except (ValueError, TypeError) as e:
        # `from None`: keep the parser's message (and any echo of the input) out of tracebacks.
        raise SigningError(
            f"{where} is not a readable PEM private key ({type(e).__name__})"
        ) from None
    if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < 1024:
        raise SigningError(f"{where} is not an RSA key of at least 1024 bits")
    return private_key


@functools.lru_cache(maxsize=64)
def _parse_pem(pem: bytes) -> PrivateKeyTypes:
    """Parse a PEM once per process: OpenSSL's key checks make each parse cost ~40 ms, and
    every run validates the key (`key_for`) and builds a signer from it. The process holds
    the key anyway; the parsed object is immutable and safe to share between threads."""
    return serialization.load_pem_private_key(pem, password=None)


class DkimSigner:
    """Signs messages for one domain: relaxed/relaxed, rsa-sha256, `SIGNED_HEADERS`.

    The output is byte-identical to `dkim.sign(message, selector, domain, pem,
    canonicalize=CANONICALIZE, include_headers=<SIGNED_HEADERS present>)` at the same second
    (dkimpy stamps `t=` from `time.time()`); the tests pin that.

    Worker processes: a signer pickles as its `DkimKey` (the PEM) and unpickles through
    `signer_for_key`, so a worker parses each key once (~40 ms) however many tasks carry the
    signer. Build one per domain per process and reuse it; never build one per message.
    """

    def __init__(self, key: DkimKey) -> None:
        _install_openssl_dispatch()
        self.key = key
        self._handle = _OpenSSLKey(_load_private_key(key))

    def __reduce__(self) -> tuple[Callable[[DkimKey], DkimSigner], tuple[DkimKey]]:
        return (signer_for_key, (self.key,))

    def sign(self, message: bytes) -> bytes:
        """`message` with a `DKIM-Signature:` header prepended."""
        try:
            signer = dkim.DKIM(message, linesep=b"\r\n")
            present = {name.lower() for name, _ in signer.headers}
            include = [name for name in _SIGNED_HEADERS_BYTES if name in present]
            header: bytes = signer.sign(
                self.key.selector.encode(),
                self.key.domain.encode(),
                self._handle,  # dkimpy passes it through to our dispatchers untouched
                canonicalize=CANONICALIZE,
                include_headers=include,
            )
        except dkim.DKIMException as e:
            raise SigningError(f"DKIM signing for {self.key.domain} failed: {e}") from e
        return header + message


@functools.lru_cache(maxsize=64)
def signer_for_key(key: DkimKey) -> DkimSigner:
    """This process's signer for `key`, built on first use: what an unpickled signer becomes."""
    return DkimSigner(key)


class _OpenSSLKey:
    """A loaded private key standing in for dkimpy's parsed-key dict inside dkimpy's `sign`."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def sign_digest(self, digest: Any) -> bytes:
        """RSASSA-PKCS1-v1_5 over dkimpy's finished hash object; deterministic, so the bytes
        equal dkimpy's own pure-Python signature."""
        if digest.name != "sha256":
            raise SigningError(f"unsupported DKIM hash {digest.name}")
        return self._key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


_DKIMPY_PARSE_PEM: Final = dkim.parse_pem_private_key
_DKIMPY_RSA_SIGN: Final = dkim.RSASSA_PKCS1_v1_5_sign


def _parse_pem_dispatch(data: Any) -> Any:
    return data if isinstance(data, _OpenSSLKey) else _DKIMPY_PARSE_PEM(data)


def _rsa_sign_dispatch(digest: Any, private_key: Any) -> Any:
    if isinstance(private_key, _OpenSSLKey):
        return private_key.sign_digest(digest)
    return _DKIMPY_RSA_SIGN(digest, private_key)


def _install_openssl_dispatch() -> None:
    """Route dkimpy's two key-handling calls to OpenSSL when, and only when, given an `_OpenSSLKey`.

    The seam: `dkim.DKIM.sign` calls exactly two module-level functions with the key, looked up
    in the `dkim` namespace at call time: `parse_pem_private_key(privkey)` (pure-Python ASN.1,
    ~0.2 ms per message, as much as the OpenSSL signature itself) and, from `gen_header`,
    `RSASSA_PKCS1_v1_5_sign(hash, key)` (the 6 ms `pow`). We replace both with dispatchers that
    handle our key object and pass anything else to dkimpy's originals, so other dkimpy users
    in the process, including the tests' reference `dkim.sign` with a PEM, are unaffected.

    Why not the alternatives: overriding `gen_header` would copy dkimpy's folding code, the part
    most likely to drift; building the header ourselves would duplicate all of `sign`. If a dkimpy
    release stops calling these names, our key object reaches dkimpy's own code and signing fails
    loudly (never silently slow or different); the byte-identity tests catch any other drift.
    Idempotent and safe to repeat: it only assigns two module attributes.
    """
    dkim.parse_pem_private_key = _parse_pem_dispatch
    dkim.RSASSA_PKCS1_v1_5_sign = _rsa_sign_dispatch



def valid_selector(selector: str) -> bool:
    """Whether `selector` is one DNS label (it becomes part of a file name and the s= tag)."""
    return bool(_SELECTOR.match(selector))


# What the key sources (`keys`) share with the key store: the same domain and key checks.
checked_domain = _checked_domain
load_private_key = _load_private_key

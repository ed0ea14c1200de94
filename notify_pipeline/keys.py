"""Where DKIM private keys come from (`NOTIFY_DKIM_KEY_SOURCE`), and which selector each domain
signs with (`NOTIFY_DKIM_SELECTOR`, `NOTIFY_DKIM_SELECTORS`).

- `home`: `$NOTIFY_HOME/keys/dkim/<domain>.<selector>.pem`, generated on first use (`DkimKeyStore`).
- `files:<folder>`: one PEM per domain and selector, `<folder>/<domain>.<selector>.pem`, e.g. a
  Kubernetes secret volume. Read only: a missing key is an error, never generated.
- `secret-manager:<project>`: the latest version of secret `dkim_<selector>_<domain, dots as
  underscores>` in Google Secret Manager. Read only, as above.

Errors name the domain, selector, file or secret, never key material.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from notify_pipeline.errors import ConfigError
from notify_pipeline.signing import (
    DkimKey,
    DkimKeyStore,
    SigningError,
    checked_domain,
    load_private_key,
    valid_selector,
)

KEY_SOURCE_SETTING = "NOTIFY_DKIM_KEY_SOURCE"
SELECTORS_SETTING = "NOTIFY_DKIM_SELECTORS"
_KEY_SOURCE_ALLOWED = "allowed: home, files:<folder of PEM files>, secret-manager:<project id>"
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_SECRET_ID_MAX = 255


class KeyMissing(SigningError):
    """A read-only key source has no key for a domain and selector; says where it looked."""

    def __init__(self, domain: str, selector: str, where: str) -> None:
        super().__init__(f"no DKIM key for {domain} (selector {selector}): {where}")
        self.domain = domain
        self.selector = selector


class KeySourceKind(StrEnum):
    HOME = "home"
    FILES = "files"
    SECRET_MANAGER = "secret-manager"  # noqa: S105 (a source name, not a secret)


@dataclass(frozen=True)
class KeySourceSpec:
    """A parsed `NOTIFY_DKIM_KEY_SOURCE`: the kind and, for files and secret-manager, where."""

    kind: KeySourceKind
    location: str = ""

    def __str__(self) -> str:
        return self.kind.value + (f":{self.location}" if self.location else "")


def parse_key_source(value: str) -> KeySourceSpec:
    """`home`, `files:<folder>` or `secret-manager:<project>`; anything else is a ConfigError."""
    kind, colon, location = value.strip().partition(":")
    if kind == KeySourceKind.HOME and not colon:
        return KeySourceSpec(KeySourceKind.HOME)
    if kind == KeySourceKind.FILES and location:
        return KeySourceSpec(KeySourceKind.FILES, location)
    if kind == KeySourceKind.SECRET_MANAGER and _PROJECT.match(location):
        return KeySourceSpec(KeySourceKind.SECRET_MANAGER, location)
    if kind == KeySourceKind.SECRET_MANAGER:
        wrong = f"{location!r} is not a Google Cloud project id"
    else:
        wrong = f"{value!r} is not a key source"
    raise ConfigError(KEY_SOURCE_SETTING, f"{wrong}; {_KEY_SOURCE_ALLOWED}")


def key_source_problems(
    value: str, selectors: Mapping[str, str], default_selector: str
) -> list[ConfigError]:
    """Every problem with the key source and selector settings, for the configuration check."""
    problems: list[ConfigError] = []
    try:
        spec = parse_key_source(value)
    except ConfigError as exc:
        problems.append(exc)
    else:
        if spec.kind is KeySourceKind.FILES and not Path(spec.location).is_dir():
            problems.append(ConfigError(KEY_SOURCE_SETTING, f"{spec.location} is not a folder;"
                                        f" {_KEY_SOURCE_ALLOWED}"))
    for domain, selector in {"": default_selector, **selectors}.items():
        problems += _selector_problems(domain, selector)
    return problems


def _selector_problems(domain: str, selector: str) -> list[ConfigError]:
    setting = SELECTORS_SETTING if domain else "NOTIFY_DKIM_SELECTOR"
    problems = []
    if domain and not _is_normal_domain(domain):
        problems.append(ConfigError(setting, f"{domain!r} is not a lower-case DNS name;"
                                        ' allowed: a JSON object {"<domain>": "<selector>"}'))
    if not valid_selector(selector):
        problems.append(ConfigError(setting, f"{selector!r} is not one DNS label;"
                                    " allowed: a-z, 0-9 and '-', at most 63 characters"))
    return problems


def _is_normal_domain(domain: str) -> bool:
    try:
        return checked_domain(domain) == domain
    except SigningError:
        return False


class KeySource(Protocol):
    """Gives the DKIM key of a domain and selector, or raises `SigningError`."""

    def key(self, domain: str, selector: str) -> DkimKey: ...


@dataclass(frozen=True)
class HomeKeys:
    """Keys under the deployment's home, generated on first use (the local profile's way)."""

    keys_dir: Path

    def key(self, domain: str, selector: str) -> DkimKey:
        return DkimKeyStore(self.keys_dir, selector).key_for(domain)


@dataclass(frozen=True)
class FileKeys:
    """Keys mounted as files (a secret volume): `<domain>.<selector>.pem`, never written."""

    directory: Path

    def key(self, domain: str, selector: str) -> DkimKey:
        domain = checked_domain(domain)
        path = self.directory / f"{domain}.{selector}.pem"
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise KeyMissing(domain, selector, f"{path} does not exist") from None
        except OSError as exc:
            raise SigningError(f"cannot read {path} ({type(exc).__name__})") from None
        return _checked(DkimKey(domain, selector, private_key_pem=pem), str(path))


class SecretReader(Protocol):
    """Reads one secret version by resource name: its bytes, or None when it does not exist."""

    def read(self, name: str) -> bytes | None: ...


def secret_id(domain: str, selector: str) -> str:
    """`dkim_<selector>_<domain with dots as underscores>`: Secret Manager ids allow only
    letters, digits, `-` and `_`; neither a selector nor a DNS label holds `_`, so the mapping
    is one to one."""
    name = f"dkim_{selector}_{checked_domain(domain).replace('.', '_')}"
    if len(name) > _SECRET_ID_MAX:
        raise SigningError(f"{domain} (selector {selector}) makes a secret id over"
                           f" {_SECRET_ID_MAX} characters")
    return name


def secret_version_name(project: str, domain: str, selector: str) -> str:
    return f"projects/{project}/secrets/{secret_id(domain, selector)}/versions/latest"


@dataclass(frozen=True)
class SecretManagerKeys:
    """Keys in Google Secret Manager, the latest version of one secret per domain and selector."""

    project: str
    reader: SecretReader

    def key(self, domain: str, selector: str) -> DkimKey:
        domain = checked_domain(domain)
        name = secret_version_name(self.project, domain, selector)
        pem = self.reader.read(name)
        if pem is None:
            raise KeyMissing(domain, selector, f"secret {name} does not exist")
        return _checked(DkimKey(domain, selector, private_key_pem=pem), f"secret {name}")


def _checked(key: DkimKey, where: str) -> DkimKey:
    load_private_key(key, where=where)  # fail here, naming the file or secret, if unusable
    return key


class GoogleSecretReader:
    """`SecretReader` over the Secret Manager client, built on first read (Application Default
    Credentials). Errors keep the API's class name only."""

    def __init__(self, client_factory: Callable[[], Any] | None = None) -> None:
        self._factory = client_factory or _secret_manager_client
        self._client: Any = None

    def read(self, name: str) -> bytes | None:
        from google.api_core import exceptions

        if self._client is None:
            self._client = self._factory()
        try:
            response = self._client.access_secret_version(name=name)
        except exceptions.NotFound:
            return None
        except exceptions.GoogleAPIError as exc:
            raise SigningError(f"Secret Manager refused {name} ({type(exc).__name__})") from None
        data: bytes = response.payload.data
        return data

    def __repr__(self) -> str:
        return "GoogleSecretReader()"


def _secret_manager_client() -> Any:
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()


def open_key_source(spec: KeySourceSpec, *, keys_dir: Path) -> KeySource:
    """The key source `spec` names; `keys_dir` is the home source's folder."""
    if spec.kind is KeySourceKind.FILES:
        return FileKeys(Path(spec.location))
    if spec.kind is KeySourceKind.SECRET_MANAGER:
        return SecretManagerKeys(spec.location, GoogleSecretReader())
    return HomeKeys(keys_dir)


@dataclass(frozen=True)
class DkimKeys:
    """The deployment's keys: each domain's selector (its own, or the default) and its key."""

    source: KeySource
    default_selector: str
    selectors: Mapping[str, str] = field(default_factory=dict)

    def selector_for(self, domain: str) -> str:
        return self.selectors.get(domain.lower().rstrip("."), self.default_selector)

    def key_for(self, domain: str) -> DkimKey:
        return self.source.key(domain, self.selector_for(domain))

    def keys(self, domains: Iterable[str]) -> list[DkimKey]:
        return [self.key_for(domain) for domain in domains]


def dkim_keys(*, key_source: str, keys_dir: Path, selector: str,
              selectors: Mapping[str, str] | None = None) -> DkimKeys:
    """The deployment's keys from its settings' values (`NOTIFY_DKIM_*`)."""
    source = open_key_source(parse_key_source(key_source), keys_dir=keys_dir)
    return DkimKeys(source, selector, dict(selectors or {}))

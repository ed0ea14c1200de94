"""The service registry: one YAML file per service in `registry/` (docs/registry.md).

A registry with any invalid file refuses to load as a whole, and every problem across every file is
reported at once (file, field, reason) so that an author can fix them all in one pass.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    ValidationError,
)
from pydantic.config import JsonDict
from pydantic_core import ErrorDetails

from notify_pipeline.errors import NotifyError
from notify_pipeline.limits import MAX_POOL_NAME, ServiceLimits

_DNS_NAME = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"

SERVICE_ID = r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$"
DISPLAY_NAME = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
LOCAL_PART = r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$"
DOMAIN = rf"^{_DNS_NAME}$"
IP_POOL = rf"^[A-Za-z0-9_-]{{1,{MAX_POOL_NAME}}}$"  # its SES configuration set holds it
PRINCIPAL = rf"^(?:(?:user|group|serviceAccount):[A-Za-z0-9._%+-]+@{_DNS_NAME}|domain:{_DNS_NAME})$"

# Each pattern in words: its schema description, and the reason given when a value breaks it.
_RULES: dict[str, str] = {
    SERVICE_ID: "must be lower-case letters, digits and '-', not starting or ending with '-'",
    DISPLAY_NAME: "must be one line of text without control characters or surrounding spaces",
    LOCAL_PART: (
        "must be lower-case letters, digits, '-', '_' and single dots between them"
        " ('+' is reserved for tags)"
    ),
    DOMAIN: "must be a lower-case DNS name such as 'notify.example.org'",
    IP_POOL: f"must be 1-{MAX_POOL_NAME} letters, digits, '-' or '_'",
    PRINCIPAL: "must be 'user:EMAIL', 'group:EMAIL', 'serviceAccount:EMAIL' or 'domain:DNS-NAME'",
}

_TAG = re.compile(r"[a-z0-9._-]{1,64}")
_TAGGED_LOCAL_PART = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*")
_MAX_LOCAL_PART = 64  # RFC 5321, section 4.5.3.1.1

Principal = Annotated[str, Field(pattern=PRINCIPAL, description=_RULES[PRINCIPAL])]
Addresses = Annotated[tuple[EmailStr, ...], Field(min_length=1)]


def _list_only(schema: JsonDict) -> None:
    """In a file an optional list is a list or absent: the loader refuses an empty key."""
    any_of = schema.pop("anyOf")
    assert isinstance(any_of, list) and isinstance(any_of[0], dict)
    schema.update(any_of[0])
    del schema["default"]


class Environment(StrEnum):
    PRODUCTION = "production"
    NON_PRODUCTION = "non-production"


class AdvancedOptions(BaseModel):
    """Explicit opt-ins; an absent option is off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reply_to: StrictBool = Field(default=False, description="Callers may set Reply-To.")
    smtp: StrictBool = Field(default=False, description="The service may submit over SMTP.")
    custom_domains: tuple[
        Annotated[str, Field(pattern=DOMAIN, max_length=253, description=_RULES[DOMAIN])], ...
    ] = ()
    dedicated_ip_pool: str | None = Field(
        default=None, pattern=IP_POOL, description=_RULES[IP_POOL]
    )
    bounce_forwarding: tuple[EmailStr, ...] = Field(
        default=(), description="Addresses that receive bounce notifications."
    )


class AlertThresholds(BaseModel):
    """When a service's bounce and complaint rates call for a warning (defaults: SES's own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_days: int = Field(default=7, ge=1, le=366, description="Rolling window, in days.")
    min_volume: int = Field(
        default=100, ge=0, description="Fewer sends in the window than this: no verdict."
    )
    bounce_warning: float = Field(default=0.05, ge=0, le=1)
    bounce_critical: float = Field(default=0.10, ge=0, le=1)
    complaint_warning: float = Field(default=0.001, ge=0, le=1)
    complaint_critical: float = Field(default=0.005, ge=0, le=1)


class Service(BaseModel):
    """One registered service: who may send as it, from which address, and to whom."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=SERVICE_ID, max_length=63, description=_RULES[SERVICE_ID])
    display_name: str = Field(
        pattern=DISPLAY_NAME, max_length=100, description="Shown in the From header."
    )
    local_part: str = Field(
        pattern=LOCAL_PART, max_length=_MAX_LOCAL_PART, description=_RULES[LOCAL_PART]
    )
    technical_contacts: Addresses = Field(description="Who to tell about bounces and problems.")
    service_accounts: Addresses = Field(description="Google service accounts allowed to send.")
    environment: Environment
    allowed_recipients: Addresses | None = Field(
        default=None,
        description="When present, the only addresses the service may send to.",
        json_schema_extra=_list_only,
    )
    use_testing_domain: StrictBool = Field(
        default=False, description="Send from the testing domain instead of the main one."
    )
    reporting_principals: tuple[Principal, ...] = Field(
        default=(), description="IAM principals who may read this service's events."
    )
    technical_principals: tuple[Principal, ...] = Field(
        default=(), description="IAM principals of the team that runs this service."
    )
    advanced: AdvancedOptions = AdvancedOptions()
    alerts: AlertThresholds = AlertThresholds()
    retention_days: int = Field(
        default=400, ge=1, description="Events older than this many days are deleted."
    )
    limits: ServiceLimits = ServiceLimits()

    def sending_domain(self, main_domain: str, testing_domain: str) -> str:
        """The domain of this service's From address; both domains are deployment settings."""
        return testing_domain if self.use_testing_domain else main_domain

    def from_address(self, *, domain: str, tag: str | None = None) -> str:
        """`local_part@domain`, or `local_part+tag@domain` so a service can tell streams apart."""
        if tag is None:
            return f"{self.local_part}@{domain}"
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r} must be 1-64 of a-z, 0-9, '.', '_' and '-'")
        local_part = f"{self.local_part}+{tag}"
        if len(local_part) > _MAX_LOCAL_PART or not _TAGGED_LOCAL_PART.fullmatch(local_part):
            raise ValueError(f"tag {tag!r} makes {local_part!r} an invalid address local part")
        return f"{local_part}@{domain}"

    def allows_recipient(self, address: str) -> bool:
        """True when there is no allow list, or `address` is on it: domains compare case-blind,
        local parts as written (RFC 5321 lets a server tell `Tester` from `tester`)."""
        if self.allowed_recipients is None:
            return True
        return _recipient_key(address) in {_recipient_key(a) for a in self.allowed_recipients}

    def allows_service_account(self, email: str) -> bool:
        """True when `email` (an identity token's `email` claim) may send as this service."""
        return _casefold_in(email, self.service_accounts)


def _casefold_in(address: str, addresses: Iterable[str]) -> bool:
    """Case-blind: local parts may be case-sensitive in theory, never in practice."""
    return address.lower() in {a.lower() for a in addresses}


def _recipient_key(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


@dataclass(frozen=True)
class RegistryIssue:
    """One problem in one registry file; `field` is a dotted path, empty for whole-file problems."""

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return ": ".join(part for part in (self.file, self.field, self.reason) if part)


class RegistryError(NotifyError):
    """The registry refuses to load; fix every listed issue and load again."""

    def __init__(self, issues: Sequence[RegistryIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class Registry(Mapping[str, Service]):
    """An immutable mapping of service id to `Service`."""

    def __init__(self, services: Iterable[Service]) -> None:
        by_id: dict[str, Service] = {}
        for service in services:
            if service.id in by_id:
                raise ValueError(f"duplicate service id {service.id!r}")
            by_id[service.id] = service
        self._by_id = MappingProxyType(dict(sorted(by_id.items())))

    def __getitem__(self, service_id: str) -> Service:
        return self._by_id[service_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def services(self) -> tuple[Service, ...]:
        """Every service, sorted by id."""
        return tuple(self._by_id.values())

    def unknown_service(self, service_id: str) -> str:
        """The sentence for an id that is not registered: the closest ids, and the registered
        ones (the first few of them, when there are many)."""
        close = difflib.get_close_matches(service_id, self._by_id, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        ids = list(self._by_id)
        shown = ", ".join(ids[:_LISTED_IDS]) + (", ..." if len(ids) > _LISTED_IDS else "")
        return f"no service {service_id!r} is registered{hint} (registered: {shown or 'none'})"


_LISTED_IDS = 12


def load_registry(directory: Path) -> Registry:
    """Load every service in `directory`, or raise `RegistryError` listing every problem."""
    services, issues = _load(directory)
    if issues:
        raise RegistryError(issues)
    return Registry(services)


def validate_registry(directory: Path) -> list[RegistryIssue]:
    """Every problem in `directory`; an empty list means the registry loads."""
    return _load(directory)[1]


def _load(directory: Path) -> tuple[list[Service], list[RegistryIssue]]:
    if not directory.is_dir():
        return [], [RegistryIssue(str(directory), "", "registry directory not found")]
    paths = sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
    if not paths:
        return [], [RegistryIssue(str(directory), "", "no service files (*.yaml) found")]
    loaded: list[tuple[Path, Service]] = []
    issues: list[RegistryIssue] = []
    for path in paths:
        service, file_issues = _load_file(path)
        issues += file_issues
        if service is not None:
            loaded.append((path, service))
    issues += _duplicate_ids(loaded) + _duplicate_from_addresses(loaded)
    return [service for _, service in loaded], issues


def _load_file(path: Path) -> tuple[Service | None, list[RegistryIssue]]:
    try:
        data = _read_yaml(path)
    except ValueError as exc:
        return None, [RegistryIssue(str(path), "", str(exc))]
    if not isinstance(data, dict):
        found = "nothing" if data is None else f"a {type(data).__name__}"
        return None, [RegistryIssue(str(path), "", f"must be a mapping of fields, found {found}")]
    issues = _file_name_issues(path, data) + _empty_allow_list_issues(path, data)
    try:
        service = Service.model_validate(data)
    except ValidationError as exc:
        errors = [error for error in exc.errors() if not _is_knock_on(error)]
        return None, issues + [_pydantic_issue(path, error) for error in errors]
    return service, issues


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a registry must not silently drop the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key.value!r}", key.start_mark
                )
            seen.add(key.value)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> object:
    """The parsed document; raises ValueError with a one-line reason (and line) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read file: {exc}") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"invalid YAML{where}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from exc


def _file_name_issues(path: Path, data: dict[Any, Any]) -> list[RegistryIssue]:
    """Checked before the model so it is reported with the other problems; an invalid id is not."""
    service_id = data.get("id")
    if not isinstance(service_id, str) or not re.fullmatch(SERVICE_ID, service_id):
        return []
    if path.stem == service_id:
        return []
    reason = f"file must be named {service_id}.yaml to match the id"
    return [RegistryIssue(str(path), "id", reason)]


def _empty_allow_list_issues(path: Path, data: dict[Any, Any]) -> list[RegistryIssue]:
    """A bare `allowed_recipients:` key (null) would silently lift the restriction."""
    if "allowed_recipients" not in data or data["allowed_recipients"] is not None:
        return []
    reason = "must list at least one address; remove the field to allow any recipient"
    return [RegistryIssue(str(path), "allowed_recipients", reason)]


# Reasons for pydantic error types whose own message is vague or reads like Python
# (every list with a minimum length is a list of addresses).
_REASONS: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "tuple_type": "must be a list",
    "model_type": "must be a mapping",
    "enum": "must be {expected}",
    "too_short": "at least one address is required",
    "string_too_long": "must be at most {max_length} characters",
}


def _is_knock_on(error: ErrorDetails) -> bool:
    """A list whose items all failed is also "too short"; its item errors already say why."""
    if error["type"] != "too_short":
        return False
    return len(error["input"]) >= int(error.get("ctx", {}).get("min_length", 1))


def _pydantic_issue(path: Path, error: ErrorDetails) -> RegistryIssue:
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    return RegistryIssue(str(path), field.lstrip("."), _reason(error))


def _reason(error: ErrorDetails) -> str:
    kind, ctx, value = error["type"], error.get("ctx", {}), error["input"]
    if kind == "string_pattern_mismatch":
        return f"{_RULES.get(ctx['pattern'], 'has the wrong format')}, not {value!r}"
    if kind in _REASONS:
        return _REASONS[kind].format(**ctx)
    if kind == "value_error" and "reason" in ctx:  # EmailStr puts email-validator's words here
        return f"{value!r} is not a valid email address: {ctx['reason']}"
    return error["msg"].removeprefix("Value error, ")


def _duplicate_ids(loaded: Sequence[tuple[Path, Service]]) -> list[RegistryIssue]:
    first: dict[str, Path] = {}
    issues = []
    for path, service in loaded:
        if service.id in first:
            reason = f"duplicate id {service.id!r}, also in {first[service.id]}"
            issues.append(RegistryIssue(str(path), "id", reason))
        first.setdefault(service.id, path)
    return issues


def _duplicate_from_addresses(loaded: Sequence[tuple[Path, Service]]) -> list[RegistryIssue]:
    """Two services sharing a From address could not be told apart by recipients or bounces:
    on the deployment's main or testing domain, or on a custom domain both list."""
    first: dict[tuple[str, str], Service] = {}
    issues = []
    for path, service in loaded:
        usual = "the testing domain" if service.use_testing_domain else "the main domain"
        for domain in (usual, *service.advanced.custom_domains):
            key = (service.local_part, domain)
            if key in first:
                owner = first[key].id
                reason = f"{service.local_part!r} on {domain} is already used by {owner!r}"
                issues.append(RegistryIssue(str(path), "local_part", reason))
            first.setdefault(key, service)
    return issues


def registry_json_schema() -> dict[str, Any]:
    """The JSON Schema of a registry file, for editors and for reviewers of registry changes."""
    return {
        **Service.model_json_schema(),
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "notify_pipeline service registration",
        "description": "One service, in registry/<id>.yaml. Generated from "
        "notify_pipeline.registry.Service: do not edit by hand.",
    }


def render_schema() -> str:
    """The schema as checked in: stable key order, so a stale file shows up as a diff."""
    return json.dumps(registry_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: Path) -> None:
    path.write_text(render_schema(), encoding="utf-8")

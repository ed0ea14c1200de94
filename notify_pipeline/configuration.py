"""Read and check the deployment's settings, reporting every problem at once as a sentence.

`Settings()` alone stops at the first kind of problem (a bad value), and the gcp profile's needs
(a project, a bucket, credentials...) only show up one at a time, when a resource is built. This
module collects all of them, each as `VARIABLE: what is wrong; allowed: what would do`.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from notify_pipeline.errors import ConfigError, ConfigErrors
from notify_pipeline.keys import key_source_problems
from notify_pipeline.settings import InboxKind, Profile, Settings, TransportKind

ENV_PREFIX = "NOTIFY_"


def load_settings() -> Settings:
    """The settings from the environment, or `ConfigErrors` listing every problem found."""
    settings, problems = _read_settings()
    problems += check_settings(settings)
    if problems:
        raise ConfigErrors(problems)
    return settings


def check_settings(settings: Settings) -> list[ConfigError]:
    """Problems that no single value shows: the home folder, the gcp profile's requirements."""
    problems = _home_problems(settings.home)
    if not settings.registry.is_dir():
        problems.append(ConfigError("NOTIFY_REGISTRY", f"{settings.registry} is not a folder;"
                                    " allowed: the folder holding the services' .yaml files"))
    problems += key_source_problems(settings.dkim_key_source, settings.dkim_selectors,
                                    settings.dkim_selector)
    if settings.profile is Profile.GCP:
        problems += _gcp_problems(settings)
    return problems


def env_name(field: str) -> str:
    """The variable a setting is read from (its alias when it has one)."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else f"{ENV_PREFIX}{field.upper()}"


def _read_settings() -> tuple[Settings, list[ConfigError]]:
    """Settings with every bad value replaced by its default, and a problem per bad value."""
    problems: list[ConfigError] = []
    defaults: dict[str, Any] = {}
    while True:
        try:
            with _without(v for f in defaults for v in (env_name(f), env_name(f).lower())):
                return Settings(**defaults), problems
        except ValidationError as exc:
            error: Exception = exc
            fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        except SettingsError as exc:  # a list or tuple value that is not JSON
            error = exc
            fields = {f for f in Settings.model_fields if f'"{f}"' in str(exc)}
        fresh = fields - defaults.keys()
        if not fresh:
            raise error  # nothing left to blame: not a value problem, so not ours to explain
        problems += [_value_problem(f) for f in sorted(fresh)]
        defaults.update({f: Settings.model_fields[f].get_default() for f in fresh})


@contextmanager
def _without(names: Iterable[str]) -> Iterator[None]:
    """Hide variables already reported: the settings source would otherwise fail on them again
    (it decodes list values before it looks at the defaults passed in)."""
    hidden = {name: os.environ.pop(name) for name in set(names) if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


def _value_problem(field: str) -> ConfigError:
    name = env_name(field)
    info = Settings.model_fields[field]
    raw = os.environ.get(name, os.environ.get(name.lower(), ""))
    shown = "(hidden)" if info.annotation is SecretStr else repr(raw)
    return ConfigError(name, f"{shown} is not allowed; allowed: {allowed_values(info)}")


def allowed_values(info: FieldInfo) -> str:
    """What a setting accepts, in words: its type, its bounds and its default."""
    kind = info.annotation
    if _is_enum(kind):
        words = "one of " + ", ".join(str(m.value) for m in typing.cast(type[Enum], kind))
    elif typing.get_origin(kind) is tuple and _item_type(kind) is int:
        words = "a JSON list of whole numbers, each at least 1, e.g. [50, 100]"
    elif typing.get_origin(kind) is tuple:
        words = 'a JSON list of strings, e.g. ["a", "b"]'
    else:
        words = _KINDS.get(kind, "text")
    words = ", ".join([words, *(_bound(m) for m in info.metadata if type(m) in _BOUNDS)])
    default = info.get_default()
    shown = default.value if isinstance(default, Enum) else default
    shown = str(shown).lower() if isinstance(shown, bool) else shown
    return words if shown in ("", ()) else f"{words} (default {shown})"


def _item_type(kind: Any) -> Any:
    """The item type of `tuple[X, ...]`, without any `Annotated` constraints."""
    item = typing.get_args(kind)[0]
    return typing.get_args(item)[0] if typing.get_origin(item) is typing.Annotated else item


def _bound(constraint: object) -> str:
    word, attribute = _BOUNDS[type(constraint)]
    return f"{word} {getattr(constraint, attribute)}"


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Enum)


_KINDS: dict[Any, str] = {
    int: "a whole number", float: "a number", bool: "true or false", Path: "a folder path"
}
_BOUNDS: dict[type, tuple[str, str]] = {
    Ge: ("at least", "ge"), Gt: ("more than", "gt"), Le: ("at most", "le"), Lt: ("less than", "lt")
}


def _home_problems(home: Path) -> list[ConfigError]:
    """A missing home is created on first use, but not under a missing parent: that is a typo,
    and following it would start a fresh deployment with new keys."""
    if home.exists() and not home.is_dir():
        return [ConfigError("NOTIFY_HOME", f"{home} is a file; allowed: a folder")]
    parent = home.resolve().parent
    if not home.exists() and not parent.is_dir():
        return [ConfigError("NOTIFY_HOME", f"{home}: its parent folder {parent} does not exist;"
                            " allowed: an existing folder, or a new one in an existing folder")]
    return []


def _gcp_problems(s: Settings) -> list[ConfigError]:
    problems = [
        ConfigError(env_name(field), f"is not set; allowed: {what} (the gcp profile needs it)")
        for field, what in _gcp_required(s)
        if not _is_set(getattr(s, field))
    ]
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key_file and not Path(key_file).is_file():
        problems.append(ConfigError("GOOGLE_APPLICATION_CREDENTIALS", f"{key_file} is not a file;"
                                    " allowed: the path of a service-account key file"))
    elif _uses_google_apis(s) and not _google_credentials_found():
        problems.append(ConfigError(
            "GOOGLE_APPLICATION_CREDENTIALS",
            "no Google credentials found; allowed: the path of a service-account key file,"
            " `gcloud auth application-default login`, or running on Google Cloud",
        ))
    return problems


def _gcp_required(s: Settings) -> list[tuple[str, str]]:
    needs = [("gcp_project", "a Google Cloud project id"),
             ("ledger_dsn", "a Postgres DSN, e.g. postgresql://user@host/db"),
             ("gcs_bucket", "the name of the bucket holding the inbox")]
    if s.inbox is InboxKind.PUBSUB:
        needs.append(("pubsub_subscription", "the Pub/Sub subscription the inbox reads"))
    if s.transport is TransportKind.SES and s.ses_events_queue_url:
        needs.append(("sns_topic_arns", 'a JSON list of SNS topic ARNs, e.g. ["arn:aws:sns:..."]'))
    return needs


def _is_set(value: object) -> bool:
    return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)


def _uses_google_apis(s: Settings) -> bool:
    """Whether some client talks to Google itself (not to an emulator) and so needs credentials."""
    return (not s.storage_emulator_host
            or (s.inbox is InboxKind.PUBSUB and not s.pubsub_emulator_host)
            or not s.bigquery_endpoint)


def _google_credentials_found() -> bool:
    """Where google-auth looks, checked without a network call (no metadata-server probe)."""
    from google.auth import _cloud_sdk
    from google.auth.compute_engine import _metadata

    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True  # its file is checked on its own (_gcp_problems)
    if Path(_cloud_sdk.get_application_default_credentials_path()).is_file():
        return True
    on_cloud_run = bool(os.environ.get("K_SERVICE") or os.environ.get("CLOUD_RUN_JOB"))
    return on_cloud_run or bool(_metadata.detect_gce_residency_linux())

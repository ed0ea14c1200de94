"""How the identity audience and the local issuer follow from the deployment's settings, and
those settings read straight from the environment.

The server's `Settings` derive the two with these functions; the client, installed without
pydantic-settings, reads the same `NOTIFY_*` variables here, so both always agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from notify_pipeline import defaults


def deployment_audience(domain: str, audience: str = "") -> str:
    """The `aud` every identity token must carry: `audience`, else `https://<domain>`."""
    return audience or f"https://{domain}"


def local_issuer(domain: str, token_issuer: str = "") -> str:
    """The `iss` of tokens minted by the local profile's issuer."""
    return token_issuer or f"https://{domain}/local-issuer"


def _env(environ: Mapping[str, str] | None, name: str) -> str:
    """A `NOTIFY_*` variable, matched case-blind as the server's settings match it."""
    wanted = name.lower()
    found = os.environ if environ is None else environ
    return next((v for k, v in found.items() if k.lower() == wanted), "")


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str:
    """One variable's value, "" when unset."""
    return _env(environ, name)


def env_home(environ: Mapping[str, str] | None = None) -> Path:
    return Path(_env(environ, "NOTIFY_HOME") or Path(defaults.HOME))


def env_registry(environ: Mapping[str, str] | None = None) -> Path:
    return Path(_env(environ, "NOTIFY_REGISTRY") or Path(defaults.REGISTRY))


def env_audience(environ: Mapping[str, str] | None = None) -> str:
    domain = _env(environ, "NOTIFY_DOMAIN") or defaults.DOMAIN
    return deployment_audience(domain, _env(environ, "NOTIFY_AUDIENCE"))


def env_local_issuer(environ: Mapping[str, str] | None = None) -> str:
    domain = _env(environ, "NOTIFY_DOMAIN") or defaults.DOMAIN
    return local_issuer(domain, _env(environ, "NOTIFY_TOKEN_ISSUER"))

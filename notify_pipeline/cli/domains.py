"""`notify domains verify`: whether services' custom domains have their DNS records published."""

from __future__ import annotations

import argparse
import json

from notify_pipeline.cli.commands import settings_keys
from notify_pipeline.errors import ConfigError
from notify_pipeline.settings import Settings


def cmd_domains_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Print each custom domain's verification as JSON; exit 0 when all are verified, else 1."""
    from notify_pipeline.domain_verification import DnsPythonLookup
    from notify_pipeline.registry import load_registry
    from notify_pipeline.sending_domains import custom_domains, verify_custom_domains

    listed = custom_domains(load_registry(settings.registry))
    unknown = [d for d in args.domains if d not in listed]
    if unknown:
        raise ConfigError("DOMAIN", f"{', '.join(unknown)} is not a custom domain of any"
                          f" service (custom domains: {', '.join(listed) or 'none'})")
    results = verify_custom_domains(
        args.domains or listed, settings_keys(settings), via_ses=settings.sends_via_ses,
        lookup=DnsPythonLookup(settings.dns_nameservers))
    print(json.dumps({"domains": [r.as_dict() for r in results]}, indent=2))
    return 0 if all(r.verified for r in results) else 1

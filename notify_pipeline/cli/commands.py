"""`notify` commands that need no Dagster: the registry, tokens, DNS records, enqueue, the sink,
and `notify up`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from notify_pipeline.errors import ConfigError
from notify_pipeline.settings import Profile, Settings

if TYPE_CHECKING:
    pass



def cmd_registry_validate(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.registry import validate_registry

    directory = args.directory or settings.registry
    issues = validate_registry(directory)
    for issue in issues:
        print(issue, file=sys.stderr)
    if not issues:
        print(f"{directory}: valid")
    return 1 if issues else 0


def cmd_registry_schema(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.registry import render_schema, write_schema

    if args.write:
        write_schema(args.write)
    else:
        print(render_schema(), end="")
    return 0


def local_issuer(settings: Settings) -> Any:
    from notify_pipeline.local_issuer import LocalIssuer

    if settings.profile is not Profile.LOCAL:
        raise ConfigError("NOTIFY_PROFILE", "only the local profile mints tokens; use Google's")
    return LocalIssuer(settings.keys_dir, settings.local_issuer)


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    token = local_issuer(settings).mint(
        service_account=args.service_account,
        audience=args.audience or settings.deployment_audience,
        ttl_seconds=args.ttl,
    )
    print(token)
    return 0


def cmd_dns_records(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.registry import load_registry
    from notify_pipeline.sending_domains import deployment_dns_records

    records = deployment_dns_records(
        main=settings.domain, testing=settings.testing_domain,
        registry=load_registry(settings.registry), keys=settings_keys(settings),
        via_ses=settings.sends_via_ses)
    print(json.dumps(records, indent=2))
    return 0


def settings_keys(settings: Settings) -> Any:
    """The deployment's DKIM keys, from `NOTIFY_DKIM_*`."""
    from notify_pipeline.keys import dkim_keys

    return dkim_keys(key_source=settings.dkim_key_source, keys_dir=settings.keys_dir,
                     selector=settings.dkim_selector, selectors=settings.dkim_selectors)


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Send one request through the client, as a service would, and say where it went."""
    from notify_pipeline.client.compose import build
    from notify_pipeline.client.session import Session
    from notify_pipeline.client.tokens import StaticToken

    inbox = args.inbox or _default_inbox(settings)
    if inbox.startswith("file:") and not args.token and not args.service_account:
        _check_registered(args.service, settings)
    session = Session(
        args.service, inbox, service_account=args.service_account,
        audience=settings.deployment_audience,
        token_source=StaticToken(args.token) if args.token else None,
    )
    wire = build(
        args.service, to=args.to, cc=args.cc, bcc=args.bcc, reply_to=args.reply_to,
        subject=args.subject, text=args.text, html=args.html, idempotency_key=args.id,
        from_tag=args.from_tag, from_domain=args.from_domain,
    )
    where = session.send_wire(wire)
    local = inbox.startswith("file:")
    report = {"id": wire["id"], "inbox": session.inbox, "path" if local else "location": where}
    if local:
        report["rejected"] = str((settings.home / "rejected").resolve())
    print(json.dumps(report))
    print(f"notify: request {wire['id']} queued at {where}"
          + (f"; a rejection would appear in {report['rejected']}" if local else ""),
          file=sys.stderr)
    return 0


def _check_registered(service: str, settings: Settings) -> None:
    """Name the registered services (and the likeliest meant) when `service` is not one."""
    from notify_pipeline.registry import load_registry

    registry = load_registry(settings.registry)
    if registry.get(service) is None:
        raise ConfigError("--service", registry.unknown_service(service)
                          + "; pass --token to enqueue it anyway")


def _default_inbox(settings: Settings) -> str:
    """The profile's own inbox: the local folder, or the gcp profile's GCS prefix."""
    from notify_pipeline.settings import InboxKind

    if settings.profile is Profile.LOCAL:
        return settings.inbox_dir.resolve().as_uri()
    if settings.inbox is InboxKind.GCS and settings.gcs_bucket:
        return f"gs://{settings.gcs_bucket}/{settings.gcs_inbox_prefix}"
    raise ConfigError("--inbox", "the gcp profile's Pub/Sub inbox is read from a subscription; "
                      "name the topic to publish to: --inbox pubsub://projects/P/topics/T")


def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.sink import run_sink

    run_sink(
        settings.mail_dir,
        host=settings.smtp_host,
        port=args.port or settings.smtp_port,
        simulate=args.simulate,
    )
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.up import run_up

    return run_up(settings, ui_port=args.port)

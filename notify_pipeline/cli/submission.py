"""`notify smtp-credentials` and `notify smtp-server`: SMTP submission for services with
`advanced.smtp`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from notify_pipeline.cli.commands import local_issuer
from notify_pipeline.errors import ConfigError
from notify_pipeline.settings import Profile, Settings

if TYPE_CHECKING:
    pass



def cmd_smtp_credentials(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.registry import load_registry
    from notify_pipeline.submission.credentials import credential_store

    store = credential_store(settings.home)
    if args.smtp_action == "create":
        new = store.create(load_registry(settings.registry), args.service)
        print(json.dumps({"service": new.service, "username": new.username,
                          "password": new.password}, indent=2))
        print("notify: the password is shown only this once; store it now", file=sys.stderr)
    elif args.smtp_action == "list":
        print(json.dumps([c.as_dict() for c in store.credentials(args.service)], indent=2))
    else:
        print(json.dumps({"revoked": store.revoke(args.service, args.username)}))
    return 0


def cmd_smtp_server(args: argparse.Namespace, settings: Settings) -> int:
    """Serve SMTP submission; accepted messages go to the local inbox as send requests."""
    from notify_pipeline.inbox.local import LocalInbox
    from notify_pipeline.policy import Domains
    from notify_pipeline.submission.credentials import credential_store
    from notify_pipeline.submission.live_registry import LiveRegistry
    from notify_pipeline.submission.server import (
        SubmissionHandler,
        SubmissionServer,
        serve_until_stopped,
    )
    from notify_pipeline.submission.submitter import local_submitters
    from notify_pipeline.submission.tls import self_signed, server_context

    if settings.profile is not Profile.LOCAL:
        raise ConfigError("NOTIFY_PROFILE", "smtp-server writes to the local inbox only")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert/--tls-key", "give both, or neither for a self-signed pair")
    cert, key = args.tls_cert, args.tls_key
    if cert is None:
        cert, key = self_signed(settings.keys_dir, "localhost")
        print(f"notify: using the self-signed certificate {cert}", file=sys.stderr)
    registry = LiveRegistry(settings.registry)
    registry()  # an invalid registry stops the start, not the first login
    handler = SubmissionHandler(
        credentials=credential_store(settings.home), registry=registry,
        domains=Domains(settings.domain, settings.testing_domain),
        submitter_for=local_submitters(inbox=LocalInbox(settings.home),
                                       issuer=local_issuer(settings),
                                       audience=settings.deployment_audience, registry=registry),
    )
    server = SubmissionServer(handler, tls=server_context(cert, key), host=args.host,
                              port=args.port, server_hostname=settings.domain)
    serve_until_stopped(server, announce=lambda line: print(line, flush=True))
    return 0

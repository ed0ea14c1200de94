"""The `notify` command line (docs/cli.md): the parser and `main`. Configuration comes from
NOTIFY_* variables, checked all at once before any command runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notify_pipeline.cli.commands import (
    cmd_dns_records,
    cmd_enqueue,
    cmd_registry_schema,
    cmd_registry_validate,
    cmd_sink,
    cmd_token,
    cmd_up,
)
from notify_pipeline.cli.domains import cmd_domains_verify
from notify_pipeline.cli.operations import (
    cmd_limits,
    cmd_retry,
    cmd_suppression_list,
    cmd_suppression_remove,
)
from notify_pipeline.cli.process import cmd_analytics, cmd_process
from notify_pipeline.cli.registry_diff import cmd_registry_diff
from notify_pipeline.cli.submission import cmd_smtp_credentials, cmd_smtp_server
from notify_pipeline.configuration import load_settings
from notify_pipeline.errors import ConfigErrors, NotifyError

if TYPE_CHECKING:
    pass



DESCRIPTION = ("The `notify` command line (docs/cli.md). Configuration comes from NOTIFY_*"
               " variables.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigErrors as exc:
        print(f"notify: the configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
        print(exc, file=sys.stderr)
        return 2
    try:
        return int(args.handler(args, settings))
    except NotifyError as exc:
        print(f"notify: {exc}", file=sys.stderr)
        return 2


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows a flag's default when it has a meaningful one (argparse's own formatter would also
    print "(default: None)" for every optional flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notify", description=DESCRIPTION,
                                     formatter_class=_HelpFormatter, epilog=_EPILOG)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".",
            formatter_class=_HelpFormatter,
        )
        return made

    reg = command("registry", "check the service registry").add_subparsers(
        required=True, metavar="ACTION"
    )
    validate = command("validate", "exit 0 when valid; 1 listing every error", reg)
    validate.add_argument("directory", nargs="?", type=Path,
                          help="the registry folder (default: $NOTIFY_REGISTRY, else registry/)")
    validate.set_defaults(handler=cmd_registry_validate)
    schema = command("schema", "print the registry JSON schema (or --write it)", reg)
    schema.add_argument("--write", type=Path, metavar="PATH", help="write the schema to PATH")
    schema.set_defaults(handler=cmd_registry_schema)
    diff = command("diff", "what a registry change grants: exit 0 when nothing needs attention,"
                   " 1 when something does", reg)
    diff.add_argument("registries", nargs="*", type=Path, metavar="DIR",
                      help="OLD NEW registry folders; with --git, only NEW (default:"
                      " $NOTIFY_REGISTRY)")
    diff.add_argument("--git", metavar="REV", help="compare NEW with itself at git revision REV")
    diff.add_argument("--json", action="store_true", help="print JSON instead of text")
    diff.set_defaults(handler=cmd_registry_diff)

    token = command("token", "local profile: print a signed ID token")
    token.add_argument("--service-account", required=True, metavar="EMAIL",
                       help="the service account the token names (its `email` claim)")
    token.add_argument("--audience", help="the `aud` claim (default: the deployment's audience,"
                       " $NOTIFY_AUDIENCE or https://$NOTIFY_DOMAIN)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(handler=cmd_token)

    dns = command("dns-records", "SPF, DKIM and DMARC records to publish, as JSON")
    dns.set_defaults(handler=cmd_dns_records)

    domains = command("domains", "services' custom sending domains").add_subparsers(
        required=True, metavar="ACTION")
    verify = command("verify", "check custom domains' DNS records; exit 0 when all are verified,"
                     " 1 otherwise", domains)
    verify.add_argument("domains", nargs="*", metavar="DOMAIN",
                        help="custom domains to check (default: every service's)")
    verify.set_defaults(handler=cmd_domains_verify)

    enqueue = command("enqueue", "put one send request on an inbox, through the client")
    enqueue.add_argument("--service", required=True, help="the registered service sending it")
    enqueue.add_argument("--to", action="append", required=True, metavar="ADDR",
                         help="a recipient; repeat for more")
    enqueue.add_argument("--cc", action="append", default=[], metavar="ADDR",
                         help="a Cc recipient; repeat for more")
    enqueue.add_argument("--bcc", action="append", default=[], metavar="ADDR",
                         help="a Bcc recipient; repeat for more")
    enqueue.add_argument("--reply-to", action="append", default=[], metavar="ADDR",
                         help="a Reply-To address (if the service enables it); repeat for more")
    enqueue.add_argument("--subject", required=True, help="the subject line")
    body = enqueue.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", help="a plain-text body")
    body.add_argument("--html", help="an HTML body (a text part is derived from it)")
    enqueue.add_argument("--id", help="idempotency key (default: a random one)")
    enqueue.add_argument("--from-tag", metavar="TAG",
                         help="sender tag: mail comes from <local part>+TAG@<domain>")
    enqueue.add_argument("--from-domain", metavar="DOMAIN",
                         help="send from this one of the service's advanced.custom_domains")
    who = enqueue.add_mutually_exclusive_group()
    who.add_argument("--service-account", metavar="EMAIL", help="mint a token for this account"
                     " (local profile; default: the service's first registered account)")
    who.add_argument("--token", help="an ID token obtained elsewhere; no registry check is made")
    enqueue.add_argument("--inbox", metavar="URL", help="file:///path, gs://bucket/prefix/ or "
                         "pubsub://projects/P/topics/T (default: the profile's inbox)")
    enqueue.set_defaults(handler=cmd_enqueue)

    sink = command("sink", "run the local SMTP sink (Maildir under $NOTIFY_HOME/mail)")
    sink.add_argument("--port", type=int, help="port to listen on (default: $NOTIFY_SMTP_PORT)")
    sink.add_argument("--simulate", action="store_true",
                      help="refuse bounce*@ (550) and defer*@ (451) recipients, for testing")
    sink.set_defaults(handler=cmd_sink)

    process = command("process", "drain every source once, in process; print JSON")
    process.add_argument("--verbose", action="store_true",
                         help="also print Dagster's own run log (debug lines) and warnings")
    process.set_defaults(handler=cmd_process)

    analytics = command(
        "analytics", "materialise the analytics assets in process; print JSON per service")
    analytics.add_argument("--service", action="append", default=[], metavar="ID",
                           help="only this service (repeatable; default: every service)")
    analytics.set_defaults(handler=cmd_analytics)

    retry = command("retry", "make deferred or stuck batches ready to run now")
    retry.add_argument("batches", nargs="*", metavar="BATCH",
                       help="staged batch ids (default: every staged batch)")
    retry.set_defaults(handler=cmd_retry)

    command("limits", "print each sending limit and warm-up cap with its use so far, as JSON"
            ).set_defaults(handler=cmd_limits)

    suppression = command("suppression", "the recipients deliveries skip (bounces, complaints)")
    actions = suppression.add_subparsers(required=True, metavar="ACTION")
    command("list", "print every suppression in force, as JSON lines", actions).set_defaults(
        handler=cmd_suppression_list)
    remove = command("remove", "lift one recipient's suppression", actions)
    remove.add_argument("address", metavar="ADDRESS", help="the suppressed email address")
    remove.set_defaults(handler=cmd_suppression_remove)

    up = command("up", "local profile: run the SMTP sink and `dagster dev` together")
    up.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    up.set_defaults(handler=cmd_up)

    creds = command("smtp-credentials", "SMTP submission credentials of services")
    actions = creds.add_subparsers(required=True, metavar="ACTION")
    create = command("create", "print a new username and password, shown once", actions)
    create.add_argument("--service", required=True,
                        help="the service (it must have advanced.smtp: true)")
    create.set_defaults(handler=cmd_smtp_credentials, smtp_action="create")
    listing = command("list", "usernames, services and creation times, as JSON", actions)
    listing.add_argument("--service", help="only this service's (default: every service's)")
    listing.set_defaults(handler=cmd_smtp_credentials, smtp_action="list")
    revoke = command("revoke", "remove a service's credential (or all of them)", actions)
    revoke.add_argument("--service", required=True, help="the service whose credential goes")
    revoke.add_argument("--username", help="the one to remove (default: every one)")
    revoke.set_defaults(handler=cmd_smtp_credentials, smtp_action="revoke")

    smtp = command("smtp-server", "accept services' mail over SMTP (STARTTLS + AUTH)")
    smtp.add_argument("--host", default="127.0.0.1", help="address to listen on")
    smtp.add_argument("--port", type=int, default=587, help="port to listen on")
    smtp.add_argument("--tls-cert", type=Path, help="PEM certificate chain (default: self-signed)")
    smtp.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    smtp.set_defaults(handler=cmd_smtp_server)
    return parser


_EPILOG = """\
configuration comes from NOTIFY_* environment variables (see the README); a problem with them
is reported as `VARIABLE: what is wrong; allowed: ...` with exit code 2."""

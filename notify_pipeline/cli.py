"""The `notify` command line (docs/cli.md). Configuration comes from NOTIFY_* variables."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from notify_pipeline.configuration import load_settings
from notify_pipeline.errors import ConfigError, ConfigErrors, NotifyError
from notify_pipeline.settings import Profile, Settings

if TYPE_CHECKING:
    from notify_pipeline.run import Totals


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
    parser = argparse.ArgumentParser(prog="notify", description=__doc__,
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

    token = command("token", "local profile: print a signed ID token")
    token.add_argument("--service-account", required=True, metavar="EMAIL",
                       help="the service account the token names (its `email` claim)")
    token.add_argument("--audience", help="the `aud` claim (default: the deployment's audience,"
                       " $NOTIFY_AUDIENCE or https://$NOTIFY_DOMAIN)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(handler=cmd_token)

    dns = command("dns-records", "SPF, DKIM and DMARC records to publish, as JSON")
    dns.set_defaults(handler=cmd_dns_records)

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


def _local_issuer(settings: Settings) -> Any:
    from notify_pipeline.local_issuer import LocalIssuer

    if settings.profile is not Profile.LOCAL:
        raise ConfigError("NOTIFY_PROFILE", "only the local profile mints tokens; use Google's")
    return LocalIssuer(settings.keys_dir, settings.local_issuer)


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    token = _local_issuer(settings).mint(
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
        registry=load_registry(settings.registry), keys_dir=settings.keys_dir,
        selector=settings.dkim_selector, via_ses=settings.sends_via_ses)
    print(json.dumps(records, indent=2))
    return 0


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
        from_tag=args.from_tag,
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


def cmd_process(args: argparse.Namespace, settings: Settings) -> int:
    with _sink_if_needed(settings), _quiet_unless(args.verbose):
        totals = process_once(settings, log_level="DEBUG" if args.verbose else "ERROR")
    print(json.dumps(totals, indent=2, sort_keys=True))
    return 0


@contextmanager
def _quiet_unless(verbose: bool) -> Iterator[None]:
    """Our own warnings (one line per rejection, say) on stderr; Dagster's run log and its
    API-stability warnings only with --verbose."""
    import dagster as dg

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("notify: %(message)s"))
    ours = logging.getLogger("notify_pipeline")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore", dg.BetaWarning)
                warnings.simplefilter("ignore", dg.PreviewWarning)
            yield
    finally:
        ours.removeHandler(handler)


@contextmanager
def _sink_if_needed(settings: Settings) -> Iterator[None]:
    """Locally, start the embedded sink for this pass when nothing listens on its address."""
    from notify_pipeline.sink import MaildirSink

    local = settings.profile is Profile.LOCAL and settings.smtp_host in ("127.0.0.1", "localhost")
    if not local or _listening(settings.smtp_host, settings.smtp_port):
        yield
        return
    print(f"notify: no SMTP server on {settings.smtp_host}:{settings.smtp_port}; running the"
          " local sink for this pass", file=sys.stderr)
    with MaildirSink(settings.mail_dir, host=settings.smtp_host, port=settings.smtp_port):
        yield


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def process_once(
    settings: Settings, *, max_rounds: int = 1000, log_level: str = "DEBUG"
) -> dict[str, Any]:
    """One pass over every configured source: evaluate each sensor of the profile and run every
    run it asks for to completion, in process, until it asks for nothing new.

    A pass takes each batch at most once: a batch handed back for a retry waits for the next.
    `log_level` is that of the runs' Dagster console log.
    """
    import dagster as dg

    from notify_pipeline.definitions import build_definitions
    from notify_pipeline.profiles import resources_for
    from notify_pipeline.run import Totals
    from notify_pipeline.sensors.worker import delivery_worker_sensor

    drain = settings.model_copy(update={"batch_max_age_seconds": 0.0})
    defs = build_definitions(drain)
    resources = resources_for(drain)
    totals = Totals()
    with _instance() as instance:
        for sensor in defs.sensors or []:
            if sensor.name == delivery_worker_sensor.name or not sensor.has_jobs:
                continue  # a pass runs each batch itself; a worker run would outlive it
            job = defs.resolve_job_def(str(sensor.job_name))
            cursor: str | None = None
            seen: set[str] = set()
            for _round in range(max_rounds):
                with dg.build_sensor_context(
                    instance=instance, resources=resources, cursor=cursor
                ) as context:
                    result = sensor(context)
                if not isinstance(result, dg.SensorResult):
                    break
                cursor = result.cursor or cursor
                fresh = [r for r in result.run_requests or [] if _work_of(r) not in seen]
                if not fresh:
                    break
                for request in fresh:
                    seen.add(_work_of(request))
                    config = {**request.run_config,
                              "loggers": {"console": {"config": {"log_level": log_level}}}}
                    outcome = job.execute_in_process(
                        run_config=config, instance=instance, tags=request.tags
                    )
                    _tally(outcome, totals)
    totals.events += _flush_leftovers(drain)
    data = totals.as_dict()
    del data["staged"], data["errors"]
    return data


def cmd_analytics(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.assets.run import run_analytics

    with _instance() as instance:
        print(json.dumps(run_analytics(settings, instance, args.service), indent=2,
                         sort_keys=True))
    return 0


def _work_of(request: Any) -> str:
    """What a run request is about: its batch when it has one, else its run key."""
    from notify_pipeline.jobs import BATCH_TAG

    return str(request.tags.get(BATCH_TAG) or request.run_key)


def _tally(outcome: Any, totals: Totals) -> None:
    """Add one run's outputs; `events` counts events written to the warehouse."""
    from notify_pipeline.run import BatchSummary

    if outcome.dagster_run.job_name == "deliver_batch":
        totals.add_batch(BatchSummary.from_dict(outcome.output_for_node("deliver")))
        totals.events += outcome.output_for_node("record_events")
    elif outcome.dagster_run.job_name == "record_provider_events":
        totals.events += outcome.output_for_node("flush_outbox")


def _flush_leftovers(settings: Settings) -> int:
    """Write any events still in the outbox (e.g. from a run that stopped after delivering)."""
    from notify_pipeline.run import flush_events

    with _deployment(settings, "ledger", "warehouse") as built:
        return flush_events(built.ledger, built.warehouse.open())


@contextmanager
def _deployment(settings: Settings, *names: str) -> Iterator[Any]:
    """The profile's resources by name, as the runs build them; `ledger` comes opened."""
    import dagster as dg

    from notify_pipeline.profiles import resources_for

    wanted = {k: v for k, v in resources_for(settings).items() if k in names}
    with dg.build_resources(wanted) as built:
        parts = {name: getattr(built, name) for name in names}
        if "ledger" not in names:
            yield SimpleNamespace(**parts)
            return
        parts["ledger"] = built.ledger.open()
        try:
            yield SimpleNamespace(**parts)
        finally:
            parts["ledger"].close()


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.run.retry import RetryOutcome, retry_batches

    with _deployment(settings, "ledger", "inbox") as built:
        results = retry_batches(built.inbox.open(), built.ledger, args.batches)
    for result in results:
        print(result)
    if not results:
        print("no staged batches")
    named_missing = args.batches and any(r.outcome is RetryOutcome.NOT_STAGED for r in results)
    return 1 if named_missing else 0


def cmd_suppression_list(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.events import utcnow

    with _deployment(settings, "ledger") as built:
        for s in built.ledger.suppressions(now=utcnow()):
            print(json.dumps({"recipient": s.recipient, "reason": s.reason,
                              "until": s.expires_at.isoformat("T", "seconds"),
                              "event_id": s.event_id}))
    return 0


def cmd_suppression_remove(args: argparse.Namespace, settings: Settings) -> int:
    with _deployment(settings, "ledger") as built:
        removed = built.ledger.remove_suppression(args.address)
    print(f"{args.address}: " + ("suppression lifted" if removed else "was not suppressed"))
    return 0 if removed else 1


def _instance() -> Any:
    """The DAGSTER_HOME instance when there is one (runs show in the UI), else an ephemeral one."""
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


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
                                       issuer=_local_issuer(settings),
                                       audience=settings.deployment_audience, registry=registry),
    )
    server = SubmissionServer(handler, tls=server_context(cert, key), host=args.host,
                              port=args.port, server_hostname=settings.domain)
    serve_until_stopped(server, announce=lambda line: print(line, flush=True))
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.up import run_up

    return run_up(settings, ui_port=args.port)


if __name__ == "__main__":
    sys.exit(main())

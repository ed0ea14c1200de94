"""The `notify` command line (DESIGN.md contract). Configuration comes from NOTIFY_* variables."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
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

    enqueue = command("enqueue", "put one send request on the local inbox")
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
    from notify_pipeline.identity import LocalIssuer

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
    from notify_pipeline.dns import SES_SPF_INCLUDE, dns_records
    from notify_pipeline.registry import load_registry
    from notify_pipeline.settings import TransportKind
    from notify_pipeline.signing import DkimKeyStore

    domains = [settings.domain, settings.testing_domain]
    for service in load_registry(settings.registry).services:
        domains += [d for d in service.advanced.custom_domains if d not in domains]
    keys = DkimKeyStore(settings.keys_dir, settings.dkim_selector).keys(domains)
    ses = settings.profile is Profile.GCP and settings.transport is TransportKind.SES
    records = dns_records(domains=domains, keys=keys, spf_include=SES_SPF_INCLUDE if ses else None)
    print(json.dumps([r.as_dict() for r in records], indent=2))
    return 0


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.inbox.local import LocalInbox

    request: dict[str, Any] = {
        "version": 1,
        "id": args.id or secrets.token_hex(16),
        "service": args.service,
        "identity_token": args.token or _token_for(args, settings),
        "to": args.to,
        "cc": args.cc,
        "bcc": args.bcc,
        "reply_to": args.reply_to,
        "subject": args.subject,
    }
    request["text" if args.text is not None else "html"] = (
        args.text if args.text is not None else args.html
    )
    if args.from_tag:
        request["from_tag"] = args.from_tag
    if settings.profile is not Profile.LOCAL:
        raise ConfigError("NOTIFY_PROFILE", "enqueue writes to the local inbox only")
    name = f"{args.service}--{request['id']}.json"
    path = LocalInbox(settings.home).write_request(json.dumps(request).encode(), name)
    print(json.dumps({"id": request["id"], "path": str(path)}))
    return 0


def _token_for(args: argparse.Namespace, settings: Settings) -> str:
    """Mint a token for --service-account, or for the service's first registered account."""
    from notify_pipeline.registry import load_registry

    account = args.service_account
    if account is None:
        registry = load_registry(settings.registry)
        service = registry.get(args.service)
        if service is None:
            raise ConfigError("--service", registry.unknown_service(args.service)
                              + "; pass --token to enqueue it anyway")
        account = service.service_accounts[0]
    token: str = _local_issuer(settings).mint(
        service_account=account, audience=settings.deployment_audience
    )
    return token


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


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from notify_pipeline.up import run_up

    return run_up(settings, ui_port=args.port)


if __name__ == "__main__":
    sys.exit(main())

"""`bounce_rate_alerts`: rate alerts and forwarded bounces, sent through the normal send path."""


from collections.abc import Callable
from pathlib import Path

import dagster as dg

from notify_pipeline.analytics.alerts import ALERTS_SERVICE, alert_requests, forwarding_requests
from notify_pipeline.analytics.submit import (
    GcsInboxWriter,
    LocalInboxWriter,
    RequestWriter,
    google_id_token,
    submit_requests,
)
from notify_pipeline.assets.partitions import services
from notify_pipeline.assets.rates import bounce_rates
from notify_pipeline.assets.resource import analytics_store
from notify_pipeline.assets.tables import GROUP, registered
from notify_pipeline.errors import ConfigError
from notify_pipeline.events import utcnow
from notify_pipeline.inbox.gcs_store import storage_client
from notify_pipeline.local_issuer import LocalIssuer
from notify_pipeline.resources import (
    GcsInboxResource,
    GoogleIdentityResource,
    IdentityResource,
    InboxResource,
    LocalIdentityResource,
    LocalInboxResource,
    RegistryResource,
    WarehouseResource,
)


def request_writer(inbox: InboxResource) -> RequestWriter:
    if isinstance(inbox, LocalInboxResource):
        return LocalInboxWriter(Path(inbox.home))
    if isinstance(inbox, GcsInboxResource):
        client = storage_client(project=inbox.project,
                                emulator_host=inbox.storage_emulator_host or None)
        return GcsInboxWriter(client.bucket(inbox.bucket), inbox.inbox_prefix)
    raise ConfigError("NOTIFY_INBOX", "alerts are written to a local or GCS inbox; a Pub/Sub"
                      " inbox needs a GCS inbox beside it for the deployment's own requests")


def token_source(identity: IdentityResource, registry: RegistryResource) -> Callable[[], str]:
    """Signs as `notify-alerts`: its first account locally, Application Default Credentials
    in gcp (which must be one of its registered accounts)."""
    alerts = registry.load().get(ALERTS_SERVICE)
    if alerts is None:
        raise ConfigError("registry", f"no {ALERTS_SERVICE!r} service is registered: add"
                          f" registry/{ALERTS_SERVICE}.yaml so alerts can be sent")
    if isinstance(identity, LocalIdentityResource):
        issuer = LocalIssuer(Path(identity.keys_dir), identity.issuer)
        return lambda: issuer.mint(service_account=alerts.service_accounts[0],
                                   audience=identity.audience)
    if isinstance(identity, GoogleIdentityResource):
        return lambda: google_id_token(identity.audience)
    raise ConfigError("identity", f"no token source for {type(identity).__name__}")


@dg.asset(partitions_def=services, deps=[bounce_rates], group_name=GROUP, kinds={"email"})
def bounce_rate_alerts(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                       registry: RegistryResource, inbox: InboxResource,
                       identity: IdentityResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Emails the service's technical contacts when today's bounce or complaint level is
    warning or critical, as send requests of the deployment's own `notify-alerts` service with
    ids `alert-<svc>-<bounce|complaint>-<level>-<as_of>`: at most one per service, metric, level
    and day however often this runs. Also forwards each new permanent bounce to the service's
    `advanced.bounce_forwarding` addresses (request id `bounce-fwd-<event_id>`)."""
    service = registered(registry, context.partition_key)
    store = analytics_store(warehouse)
    today = utcnow().date()
    row = store.rate_on(service.id, today) or store.compute_rates(service.id, today,
                                                                  service.alerts)
    requests = alert_requests(service, row, store.top_reasons(service.id, today,
                                                              row.window_days))
    forwards, mark = ([], None)
    if service.advanced.bounce_forwarding:
        bounces, mark = store.new_permanent_bounces(service.id)
        forwards = forwarding_requests(service, bounces)
    ids = []
    if requests or forwards:
        ids = submit_requests(requests + forwards, request_writer(inbox),
                              token_source(identity, registry))
    if mark is not None:
        store.advance_forwarding(service.id, mark)
    return dg.MaterializeResult(metadata={
        "alerts": dg.MetadataValue.int(len(requests)),
        "bounces_forwarded": dg.MetadataValue.int(len(forwards)),
        "request_ids": dg.MetadataValue.json(ids[:50]),
        "as_of": dg.MetadataValue.text(today.isoformat()),
    })

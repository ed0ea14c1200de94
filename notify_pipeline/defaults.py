"""Every deployment default, written once.

`Settings` reads the environment with these as its defaults; Dagster resources and adapters use
them where a caller may leave a value out. Plain constants only: importing this module costs
nothing and pulls in neither Dagster nor the settings.
"""

from __future__ import annotations

from typing import Final

# Where the local profile keeps its state, and the service registry
HOME: Final = ".notify"
REGISTRY: Final = "registry"

# Sending domains, DKIM and caller identity
DOMAIN: Final = "notify.example.org"
TESTING_DOMAIN: Final = "email-testing.notify.example.org"
DKIM_SELECTOR: Final = "notify1"
DKIM_KEY_SOURCE: Final = "home"
DOMAIN_CHECK_SECONDS: Final = 300.0
TOKEN_CLOCK_SKEW_SECONDS: Final = 30
GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS: Final = ("https://accounts.google.com", "accounts.google.com")

# Send requests and batching
MAX_REQUEST_BYTES: Final = 10 * 1024 * 1024  # the wire format's limit on one request
BATCH_MAX_SIZE: Final = 2000
BATCH_MAX_AGE_SECONDS: Final = 1.0
CLAIM_LEASE_SECONDS: Final = 300.0
PROVIDER_RETRY_SECONDS: Final = 30.0
MAX_MESSAGE_ATTEMPTS: Final = 5
# How long after a request arrived a recipient server's "try again later" (4xx: greylisting, a
# full mailbox) is still retried; a message is claimed at least MAX_MESSAGE_ATTEMPTS times
# whatever its age. Greylisting asks for minutes (Postgrey: 5), RFC 5321 for days of retries.
RECIPIENT_RETRY_HOURS: Final = 24.0
SUPPRESSION_DAYS: Final = 90

# Sending limits (recipient-deliveries; 0 means none) and a dedicated IP pool's warm-up: its
# daily caps from the day of its first send, doubling from 50; after the last day, none.
LIMIT_PER_MINUTE: Final = 0
LIMIT_PER_DAY: Final = 0
WARMUP_SCHEDULE: Final = tuple(50 * 2**day for day in range(12))

# The long-lived delivery worker runs, and how many go at once
DELIVERY_WORKERS: Final = 1
RUN_RETENTION_DAYS: Final = 90  # finished Dagster runs kept this long
WORKER_POLL_SECONDS: Final = 0.25
WORKER_MAX_SECONDS: Final = 3600.0

# SMTP (the local sink by default)
SMTP_HOST: Final = "127.0.0.1"
SMTP_PORT: Final = 2525
SMTP_TIMEOUT_SECONDS: Final = 30.0
SMTP_CONNECTIONS: Final = 4

# Amazon SES and its event queue
SES_REGION: Final = "eu-west-1"
SES_MAX_SEND_RATE: Final = 14.0
SES_CONCURRENCY: Final = 8
SQS_WAIT_SECONDS: Final = 2

# Google Cloud inboxes
GCS_INBOX_PREFIX: Final = "inbox/"
PUBSUB_STORE_ROOT: Final = "pubsub/"

# The production ledger and warehouse
LEDGER_SCHEMA: Final = "notify_ledger"
LEDGER_CONNECT_TIMEOUT_SECONDS: Final = 10
BIGQUERY_DATASET: Final = "notify_events"
BIGQUERY_LOCATION: Final = "EU"

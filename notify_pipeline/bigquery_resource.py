"""dagster-gcp's `BigQueryResource`, able to point at a BigQuery emulator (a Dagster resource,
so it lives in the Dagster layer beside `resources`).

The stock resource builds `bigquery.Client(project, location)`, which looks for Google credentials
and fails against an emulator (`DefaultCredentialsError`). With `endpoint` set (from
`NOTIFY_BIGQUERY_ENDPOINT`) the client is anonymous and talks to that endpoint; without it this is
the stock resource, using Application Default Credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster_gcp import BigQueryResource
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from pydantic import Field


class EmulatorAwareBigQueryResource(BigQueryResource):
    endpoint: str | None = Field(
        default=None,
        description="BigQuery API endpoint of an emulator (e.g. http://127.0.0.1:9050); unset in"
        " production.",
    )

    def make_client(self) -> bigquery.Client:
        """A new client, for holders that outlive a `with` block (e.g. a warehouse); close it."""
        if not self.endpoint:
            with super().get_client() as client:
                return client
        return bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        client = self.make_client()
        try:
            yield client
        finally:
            client.close()  # type: ignore[no-untyped-call]

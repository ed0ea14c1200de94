"""HTTP sessions for fetching public key material (identity certificates, SNS certificates).

Both fetches are idempotent GETs of small documents, so they share one policy: bounded retries
with backoff on connection failures and on the statuses a busy or restarting server answers.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504)


def retrying_session(
    *, retries: int, backoff_seconds: float, raise_on_status: bool = True
) -> requests.Session:
    """A session retrying GETs up to `retries` times, waiting `backoff_seconds` doubled each time.

    `raise_on_status=False` hands the last retryable response back instead of raising, for
    callers that judge the status themselves.
    """
    retry = Retry(
        total=retries,
        backoff_factor=backoff_seconds,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=raise_on_status,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session

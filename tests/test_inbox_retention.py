"""Which kept copies a retention pass removes, and the service a kept copy is counted for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notify_pipeline.inbox.retention import KeptRetention, service_of

NOW = datetime(2026, 12, 1, tzinfo=UTC)
RULE = KeptRetention(cutoffs={"svc-a": NOW - timedelta(days=30)},
                     default_cutoff=NOW - timedelta(days=400),
                     registered=frozenset({"svc-a", "svc-b"}))


@pytest.mark.parametrize(("service", "cutoff", "attributed"), [
    ("svc-a", NOW - timedelta(days=30), "svc-a"),
    ("svc-b", None, "svc-b"),  # registered, outside this pass: its own pass decides
    ("gone-svc", NOW - timedelta(days=400), None),
    (None, NOW - timedelta(days=400), None),
])
def test_each_copy_gets_its_services_cutoff_or_the_default(service, cutoff, attributed):
    assert RULE.cutoff_for(service) == cutoff
    assert RULE.attributed(service) == attributed


def test_the_latest_cutoff_bounds_what_a_pass_must_look_at():
    assert RULE.latest_cutoff == NOW - timedelta(days=30)


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"service": "svc-a", "id": "x"}', "svc-a"),
    (b'{"service": "Bad\\r\\nId"}', None),
    (b'{"service": 7}', None),
    (b"[" * 100_000, None),
    (b"\xff\xfe", None),
    (b'"<request withheld: not a JSON object, it may contain a token>"', None),
])
def test_the_service_of_a_kept_copy_is_a_plain_id_or_none(body, expected):
    assert service_of(body) == expected

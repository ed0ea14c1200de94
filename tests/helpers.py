"""Builders shared by tests: valid send requests and registered services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REGISTRY = REPO / "registry"
PROD_ACCOUNT = "lookup-prod@lookup-prod-1234.iam.gserviceaccount.com"


def request_dict(**overrides: Any) -> dict[str, Any]:
    """A valid request for the `lookup-notices` service (token left to the caller)."""
    data: dict[str, Any] = {
        "version": 1,
        "id": "msg-1",
        "service": "lookup-notices",
        "identity_token": "token-placeholder",
        "to": ["alice@example.org"],
        "subject": "Hello",
        "text": "Hi there",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def request_bytes(**overrides: Any) -> bytes:
    return json.dumps(request_dict(**overrides)).encode()

"""Inboxes: where send requests arrive (a local folder, a GCS prefix, a Pub/Sub subscription)."""

"""The naive loop: what a user would write instead of the pipeline, as a script of its own.

One process, one SMTP connection: read each request file, build the message with the standard
library, sign it with plain dkimpy (its own pure-Python RSA), send it with smtplib. No identity
check, no policy, no ledger, no events, no durability: strictly less work than the pipeline.

    python -m benchmarks.naive --requests DIR --port N --key PEM --domain D --selector S

prints `{"messages": ..., "seconds": ..., "cpu_seconds": ...}`. It imports nothing from
notify_pipeline.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import dkim

HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]


def message_bytes(request: dict[str, Any], sender: str, domain: str) -> bytes:
    """The request as the standard library renders it, unsigned (the floor sender reuses it)."""
    msg = EmailMessage()
    msg["From"] = f"Lookup Notices <{sender}>"
    msg["To"] = ", ".join(request["to"])
    msg["Subject"] = request["subject"]
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=domain)
    msg.set_content(request["text"])
    return msg.as_bytes(policy=SMTP)


def send_all(requests: list[Path], *, port: int, pem: bytes, domain: str, selector: str) -> int:
    sender = f"lookup@{domain}"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for path in requests:
            request = json.loads(path.read_bytes())
            raw = message_bytes(request, sender, domain)
            signature = dkim.sign(raw, selector.encode(), domain.encode(), pem,
                                  include_headers=HEADERS)
            smtp.sendmail(sender, request["to"], signature + raw)
    return len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--selector", required=True)
    args = parser.parse_args()
    requests = sorted(args.requests.glob("*.json"))
    start, cpu = time.perf_counter(), time.process_time()
    sent = send_all(requests, port=args.port, pem=args.key.read_bytes(), domain=args.domain,
                    selector=args.selector)
    print(json.dumps({"messages": sent, "seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time() - cpu}))


if __name__ == "__main__":
    main()

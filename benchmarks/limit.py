"""The machine's limit for this workload: the slower of the two stages every message must pass.

- DKIM: RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second with OpenSSL (via `cryptography`),
  one process per core, all signing at once.
- SMTP: the sink's accept rate over loopback, tight smtplib loops sending pre-rendered,
  pre-signed messages (the sink fsyncs each one before its 250), on one connection and on as
  many at once as the pipeline opens (`NOTIFY_SMTP_CONNECTIONS`): the limit is the better of
  the two, so a pipeline using several connections is held to what the sink can do with them.
"""

from __future__ import annotations

import multiprocessing
import os
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from benchmarks.harness import (
    BODY,
    HOST,
    Deployment,
    exactly_once,
    rate,
    recipient,
    sink_process,
)


def _sign_for(pem: bytes, seconds: float, barrier: Any) -> int:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    digest = os.urandom(32)
    algorithm = utils.Prehashed(hashes.SHA256())
    barrier.wait()
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        key.sign(digest, padding.PKCS1v15(), algorithm)
        count += 1
    return count


def signatures_per_second(seconds: float = 3.0) -> dict[str, Any]:
    """Signatures per second summed over one signing process per core, all at once."""
    cores = os.cpu_count() or 1
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(cores)
    with ctx.Pool(cores) as pool:
        counts = pool.starmap(_sign_for, [(pem, seconds, barrier)] * cores)
    return {"processes": cores, "seconds": seconds,
            "per_second": rate(sum(counts), seconds)}


def pre_rendered(deployment: Deployment, prefix: str, messages: int) -> list[tuple[str, bytes]]:
    """(recipient, bytes) pairs: one message rendered and signed by the project, then given each
    recipient in turn (same length, so every message has the pipeline's size)."""
    from notify_pipeline.message import Envelope
    from notify_pipeline.mime import make_message_id_header, render
    from notify_pipeline.signing import DkimKeyStore, DkimSigner

    s = deployment.settings()
    first = recipient(prefix, 0)
    envelope = Envelope(service="lookup-notices", message_id="limit", from_display="Lookup",
                        from_address=f"lookup@{s.domain}", to=(first,),
                        subject="Your weekly summary (0)", text=BODY)
    raw = render(envelope, date=datetime.now(UTC),
                 message_id_header=make_message_id_header("lookup-notices", "limit", s.domain))
    signed = DkimSigner(DkimKeyStore(s.keys_dir, s.dkim_selector).key_for(s.domain)).sign(raw)
    return [
        (recipient(prefix, i), signed.replace(first.encode(), recipient(prefix, i).encode()))
        for i in range(messages)
    ]


def smtp_accept_per_second(
    root: Path, messages: int, log: IO[bytes], *, connections: int = 1
) -> dict[str, Any]:
    """The sink's accept rate: tight loops on `connections` connections at once (one thread
    each), pre-rendered messages."""
    deployment = Deployment.create(root, f"limit-{connections}")
    prefix = f"limit{connections}"
    data = pre_rendered(deployment, prefix, messages)

    def client(share: list[tuple[str, bytes]]) -> None:
        with smtplib.SMTP(HOST, deployment.smtp_port, timeout=30) as smtp:
            for to, message in share:
                smtp.sendmail("lookup@notify.example.org", [to], message)

    with sink_process(deployment, log):
        start = time.perf_counter()
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(client, [data[k::connections] for k in range(connections)]))
        seconds = time.perf_counter() - start
    return {"connections": connections, "messages": messages, "seconds": round(seconds, 3),
            "per_second": rate(messages, seconds),
            **exactly_once(deployment.mail_dir, prefix, messages)}

"""The machine's limit for this workload: cores / (t_RSA + t_peer + t_client).

Every message costs, whoever sends it, at least three pieces of CPU on the same machine:
- t_RSA: one RSA-2048 PKCS#1 v1.5 SHA-256 signature with OpenSSL (via `cryptography`), from
  one signing process per core all signing at once (cores / their summed rate);
- t_peer: the SMTP peer accepting it (by default Postfix's C smtp-sink dumping to a tmpfs),
  its process's CPU over a tight client loop, per message;
- t_client: that tight smtplib loop's own CPU per message (pre-rendered, pre-signed bytes).
With every core busy on nothing else, no sender can beat cores / (their sum).
"""

from __future__ import annotations

import multiprocessing
import os
import smtplib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from benchmarks.harness import (
    BODY,
    HOST,
    Deployment,
    ms_per_message,
    peer_process,
    rate,
    recipient,
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
    with ctx.Manager() as manager, ctx.Pool(cores) as pool:
        barrier = manager.Barrier(cores)
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


def peer_and_client(
    root: Path, messages: int, log: IO[bytes], *, peer: str = "c"
) -> dict[str, Any]:
    """The SMTP half of the limit: a tight smtplib loop on one connection sending pre-rendered,
    pre-signed messages to the peer. Returns the peer's CPU per message (its process, read
    before and after), the client loop's CPU per message (this thread's), and the peer's accept
    rate (wall clock)."""
    deployment = Deployment.create(root, f"limit-{peer}")
    prefix = f"limit{peer}"
    data = pre_rendered(deployment, prefix, messages)
    with peer_process(deployment, log, peer) as server:
        with smtplib.SMTP(HOST, deployment.smtp_port, timeout=30) as smtp:
            smtp.noop()  # connected and greeted before anything is counted
            peer_before, client_before = server.cpu_seconds(), time.thread_time()
            start = time.perf_counter()
            for to, message in data:
                smtp.sendmail("lookup@notify.example.org", [to], message)
            seconds = time.perf_counter() - start
            client_cpu = time.thread_time() - client_before
            peer_cpu = server.cpu_seconds() - peer_before
        stored = server.exactly_once(prefix, messages)
    return {"messages": messages, "seconds": round(seconds, 3),
            "accept_per_second": rate(messages, seconds),
            "peer_cpu_ms_per_message": ms_per_message(peer_cpu, messages),
            "client_cpu_ms_per_message": ms_per_message(client_cpu, messages),
            **stored}


def combine(signing: dict[str, Any], smtp: dict[str, Any]) -> dict[str, Any]:
    """limit = cores / (t_RSA + t_peer + t_client): the rate at which the machine's cores,
    all busy, do the CPU work no sender can avoid for one message: its RSA signature, the
    peer's work to accept it, and the SMTP client's work to send it."""
    cores = signing["processes"]
    t_rsa = cores / signing["per_second"] if signing["per_second"] else 0.0
    t_peer = smtp["peer_cpu_ms_per_message"] / 1000
    t_client = smtp["client_cpu_ms_per_message"] / 1000
    total = t_rsa + t_peer + t_client
    return {
        "cores": cores,
        "cpu_ms_per_message": {"rsa": round(1000 * t_rsa, 3), "peer": round(1000 * t_peer, 3),
                               "client": round(1000 * t_client, 3),
                               "total": round(1000 * total, 3)},
        "per_second": rate(cores, total),
    }

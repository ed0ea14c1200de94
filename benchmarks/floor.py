"""The floor: the cheapest honest sender of the same messages, as a script of its own.

Two processes (one per core by default), each with one SMTP connection and half the request
files: `json.loads`, a stdlib `EmailMessage`, dkimpy's canonicalisation and header with the RSA
step done by OpenSSL (as the pipeline signs: relaxed/relaxed, rsa-sha256), `smtplib.sendmail`.
No identity check, policy, ledger, events or durability, and nothing waits for anything else:
the pipeline's work minus everything that makes it safe.

    python -m benchmarks.floor --requests DIR --port N --key PEM --domain D --selector S \
        [--processes N]

prints `{"messages": ..., "seconds": ..., "cpu_seconds": ...}` (the senders' own CPU over their
loops). It imports nothing from notify_pipeline; it builds each message as the naive loop does.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import smtplib
import time
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from benchmarks.naive import HEADERS, message_bytes

CANONICALIZE = (b"relaxed", b"relaxed")


class _OpenSSLKey:
    """A loaded key that dkimpy passes, untouched, to the RSA function installed below."""

    def __init__(self, pem: bytes) -> None:
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key = key


_PARSE, _SIGN = dkim.parse_pem_private_key, dkim.RSASSA_PKCS1_v1_5_sign


def _parse(data: Any) -> Any:
    return data if isinstance(data, _OpenSSLKey) else _PARSE(data)


def _sign(digest: Any, key: Any) -> Any:
    if isinstance(key, _OpenSSLKey):
        return key.key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    return _SIGN(digest, key)


def send_share(requests: list[Path], port: int, pem: bytes, domain: str, selector: str,
               barrier: Any, results: Any) -> None:
    dkim.parse_pem_private_key, dkim.RSASSA_PKCS1_v1_5_sign = _parse, _sign
    key = _OpenSSLKey(pem)
    sender = f"lookup@{domain}"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.noop()
        barrier.wait()
        cpu = time.process_time()
        for path in requests:
            request = json.loads(path.read_bytes())
            raw = message_bytes(request, sender, domain)
            signature = dkim.sign(raw, selector.encode(), domain.encode(), key,
                                  canonicalize=CANONICALIZE, include_headers=HEADERS)
            smtp.sendmail(sender, request["to"], signature + raw)
        results.put((len(requests), time.process_time() - cpu))


def send_all(requests: list[Path], *, processes: int, port: int, pem: bytes, domain: str,
             selector: str) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    senders = [ctx.Process(target=send_share, args=(requests[k::processes], port, pem, domain,
                                                    selector, barrier, results))
               for k in range(processes)]
    for proc in senders:
        proc.start()
    barrier.wait()  # every sender started, connected and ready
    start = time.perf_counter()
    done = [results.get(timeout=3600) for _ in senders]
    seconds = time.perf_counter() - start
    for proc in senders:
        proc.join()
    return {"messages": sum(n for n, _ in done), "seconds": seconds,
            "cpu_seconds": sum(cpu for _, cpu in done)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--selector", required=True)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    result = send_all(sorted(args.requests.glob("*.json")), processes=args.processes,
                      port=args.port, pem=args.key.read_bytes(), domain=args.domain,
                      selector=args.selector)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Throughput, in one run on one machine: the naive loop, the machine's limit, the pipeline.

    python -m benchmarks.e2e --messages 10000 [--quick] [--workdir DIR]

Prints one JSON object: messages per second for `naive`, `limit` and `pipeline` (the default
deployment's delivery worker run), and the ratios `pipeline/naive` and `pipeline/limit`; the
same for `pipeline_per_batch_runs` (a Dagster run per batch, as `notify process` runs) as
context. Each part gets a fresh deployment folder and its own sink process, and the parts run
one after another, never at once. `--quick` shortens the signature measurement and caps the
naive loop at 500 messages (its rate is flat in N). The work folder is deleted afterwards
unless `--workdir` is given (the smoke test inspects the Maildirs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from benchmarks import limit, pipeline
from benchmarks.harness import (
    REPO,
    Deployment,
    exactly_once,
    machine,
    rate,
    request_body,
    request_name,
    sink_process,
)

NAIVE_HOW = (
    "one process, one SMTP connection: json.loads, stdlib EmailMessage, plain dkimpy dkim.sign,"
    " smtplib.sendmail to the same sink (its own process); no auth, ledger, events or durability"
)


def naive(root: Path, messages: int, log: IO[bytes], *, prefix: str = "naive") -> dict[str, Any]:
    deployment = Deployment.create(root, "naive")
    token = deployment.token()
    folder = deployment.home / "requests"
    folder.mkdir()
    for i in range(messages):
        (folder / request_name(prefix, i)).write_bytes(request_body(token, prefix, i))
    s = deployment.settings()
    from notify_pipeline.signing import DkimKeyStore

    DkimKeyStore(s.keys_dir, s.dkim_selector).key_for(s.domain)  # the deployment's own key
    key = s.keys_dir / "dkim" / f"{s.domain}.{s.dkim_selector}.pem"
    with sink_process(deployment, log):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.naive", "--requests", str(folder), "--port",
             str(deployment.smtp_port), "--key", str(key), "--domain", s.domain,
             "--selector", s.dkim_selector],
            cwd=REPO, env=deployment.env, capture_output=True, check=True,
            timeout=120 + messages / 5,
        )
    result = json.loads(done.stdout)
    return {"how": NAIVE_HOW, "messages": messages, "seconds": round(result["seconds"], 3),
            "per_second": rate(result["messages"], result["seconds"]),
            **exactly_once(deployment.mail_dir, prefix, messages)}


def run(messages: int, *, quick: bool, workdir: Path) -> dict[str, Any]:
    log_path = workdir / "benchmark.log"
    with log_path.open("ab") as log:
        naive_result = naive(workdir, min(messages, 500) if quick else messages, log)
        signing = limit.signatures_per_second(1.0 if quick else 3.0)
        one = limit.smtp_accept_per_second(workdir, messages, log)
        connections = _pipeline_connections()
        many = (limit.smtp_accept_per_second(workdir, messages, log, connections=connections)
                if connections > 1 else one)
        piped = pipeline.measure(workdir, messages, log, path="worker")
        per_batch = pipeline.measure(workdir, messages, log, path="runs", prefix="runs")
    accept = max(one["per_second"], many["per_second"])  # the sink at its best
    bound = min(signing["per_second"], accept)
    return {
        "benchmark": "e2e",
        "messages": messages,
        "quick": quick,
        "machine": machine(),
        "naive": naive_result,
        "limit": {
            "rsa2048_signatures_all_cores": signing,
            "smtp_sink_accept": one,
            "smtp_sink_accept_parallel": many,
            "per_second": bound,
            "bottleneck": "dkim_signing" if signing["per_second"] <= bound else "smtp_accept",
        },
        "pipeline": piped,
        "pipeline_per_batch_runs": per_batch,
        "ratios": {
            "pipeline/naive": round(piped["per_second"] / naive_result["per_second"], 2),
            "pipeline/limit": round(piped["per_second"] / bound, 2),
            "per_batch_runs/naive": round(per_batch["per_second"] / naive_result["per_second"], 2),
            "per_batch_runs/limit": round(per_batch["per_second"] / bound, 2),
        },
    }


def _pipeline_connections() -> int:
    """The SMTP connections the pipeline opens with default settings."""
    from notify_pipeline.settings import Settings

    return int(Settings.model_fields["smtp_connections"].default)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args.messages, quick=args.quick, workdir=args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
            result = run(args.messages, quick=args.quick, workdir=Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Throughput, in one run on one machine: the limit, the floor, the naive loop, the pipeline.

    python -m benchmarks.e2e --messages 10000 [--rounds 5] [--quick] [--peer c|python]
                             [--workdir DIR]

Prints one JSON object:
- `limit`: cores / (t_RSA + t_peer + t_client), the CPU every message costs whoever sends it
  (`benchmarks/limit.py`), with the three terms, the all-core RSA rate and the peer's accept rate;
- `floor`: a sender with no durability and no policy, one process per core (`benchmarks/floor.py`);
- `naive`: what a user would write, one process, pure-Python dkimpy (`benchmarks/naive.py`);
- `pipeline`: the default deployment's delivery worker loop, and `pipeline_per_batch_runs`
  (a Dagster run per batch, as `notify process` runs) as context, both starting, as the floor
  and the naive loop do, with every request waiting on disk;
- `pipeline_arriving`: the delivery worker loop while four client threads on the same cores
  write the requests (the clock starts at the first write), as a machine shared with its
  clients sees it;
with messages per second, CPU milliseconds per message for each, and the ratios
`pipeline/limit`, `pipeline/floor`, `pipeline/naive` (and the same for the other two). Every
part sends to the same kind of peer, by default Postfix's C `smtp-sink` (dumping to a tmpfs, so
the peer costs as little as a real SMTP server can); `--peer python` uses the project's own
sink instead (no Postfix needed, as the smoke test does). Each part gets a fresh deployment
folder and its own peer process, and the parts run one after another.

The floor and the pipeline run in `--rounds` alternating rounds (5 by default; the floor first in
odd rounds, the pipeline first in even ones), because a machine shared with other work changes
speed from minute to minute: two parts measured minutes apart can differ by a fifth on the same
code. `rounds` lists each round's rates and ratio; `floor`, `pipeline` and every ratio are those
of the round with the median pipeline/floor ratio (the lower one for an even count), so the
figures printed together come from one round. `--quick` runs one round, shortens the signature
measurement and caps the naive loop at 500 messages (its rate is flat in N). `machine_share`
says what else the machine did meanwhile. The work folder is deleted afterwards unless
`--workdir` is given.
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
    PEERS,
    REPO,
    SMTP_SINK_MISSING,
    Deployment,
    MachineShare,
    machine,
    ms_per_message,
    peer_process,
    rate,
    request_body,
    request_name,
    smtp_sink_available,
)

NAIVE_HOW = (
    "one process, one SMTP connection: json.loads, stdlib EmailMessage, plain dkimpy dkim.sign"
    " (pure-Python RSA), smtplib.sendmail; no auth, ledger, events or durability"
)
FLOOR_HOW = (
    "one process per core, one SMTP connection each: json.loads, stdlib EmailMessage, dkimpy"
    " canonicalisation with OpenSSL RSA, smtplib.sendmail; no auth, policy, ledger, events or"
    " durability"
)


def sender(root: Path, script: str, messages: int, log: IO[bytes], *, peer: str,
           args: tuple[str, ...] = (), name: str | None = None) -> dict[str, Any]:
    """Run a standalone sender script (`naive`, `floor`) over `messages` request files, in the
    deployment folder `name` (default: the script's name) under `root`."""
    deployment = Deployment.create(root, name or script)
    token = deployment.token()
    folder = deployment.home / "requests"
    folder.mkdir()
    for i in range(messages):
        (folder / request_name(script, i)).write_bytes(request_body(token, script, i))
    s = deployment.settings()
    from notify_pipeline.signing import DkimKeyStore

    DkimKeyStore(s.keys_dir, s.dkim_selector).key_for(s.domain)  # the deployment's own key
    key = s.keys_dir / "dkim" / f"{s.domain}.{s.dkim_selector}.pem"
    with peer_process(deployment, log, peer) as server:
        peer_before = server.cpu_seconds()
        done = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{script}", "--requests", str(folder), "--port",
             str(deployment.smtp_port), "--key", str(key), "--domain", s.domain,
             "--selector", s.dkim_selector, *args],
            cwd=REPO, env=deployment.env, stdout=subprocess.PIPE, stderr=log, check=True,
            timeout=120 + messages / 5,
        )
        peer_cpu = server.cpu_seconds() - peer_before
        stored = server.exactly_once(script, messages)
    result = json.loads(done.stdout)
    return {"how": NAIVE_HOW if script == "naive" else FLOOR_HOW, "messages": messages,
            "seconds": round(result["seconds"], 3),
            "per_second": rate(result["messages"], result["seconds"]),
            "cpu_ms_per_message": {"sender": ms_per_message(result["cpu_seconds"], messages),
                                   "peer": ms_per_message(peer_cpu, messages)},
            **stored}


def floor_and_pipeline(workdir: Path, messages: int, log: IO[bytes], *, peer: str,
                       rounds: int) -> list[dict[str, Any]]:
    """`rounds` rounds of the floor and the pipeline, the order alternating between rounds;
    the first round's folders are `floor` and `pipeline-worker-N`, later ones get `-2`, `-3`..."""
    def one(part: str, suffix: str) -> dict[str, Any]:
        if part == "floor":
            return sender(workdir, "floor", messages, log, peer=peer, name=f"floor{suffix}")
        return pipeline.measure(workdir, messages, log, path="worker", peer=peer,
                                name=f"pipeline-worker-{messages}{suffix}", start="waiting")

    done = []
    for index in range(rounds):
        order = ("floor", "pipeline") if index % 2 == 0 else ("pipeline", "floor")
        suffix = f"-{index + 1}" if index else ""
        done.append({"first": order[0], **{part: one(part, suffix) for part in order}})
    return done


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median pipeline/floor ratio; the lower of the two middle ones for an
    even count, so an even count never flatters the pipeline."""
    ranked = sorted(rounds, key=_pipeline_over_floor)
    return ranked[(len(ranked) - 1) // 2]


def _pipeline_over_floor(round_: dict[str, Any]) -> float:
    return float(round_["pipeline"]["per_second"] / round_["floor"]["per_second"])


def run(messages: int, *, quick: bool, peer: str, workdir: Path,
        rounds: int = 5) -> dict[str, Any]:
    share = MachineShare()
    log_path = workdir / "benchmark.log"
    rounds = 1 if quick else rounds
    with log_path.open("ab") as log:
        signing = limit.signatures_per_second(1.0 if quick else 3.0)
        smtp = limit.peer_and_client(workdir, messages, log, peer=peer)
        measured = floor_and_pipeline(workdir, messages, log, peer=peer, rounds=rounds)
        naive = sender(workdir, "naive", min(messages, 500) if quick else messages, log,
                       peer=peer)
        per_batch = pipeline.measure(workdir, messages, log, path="runs", prefix="runs",
                                     peer=peer, start="waiting")
        arriving = pipeline.measure(workdir, messages, log, path="worker", prefix="live",
                                    peer=peer, name=f"pipeline-arriving-{messages}",
                                    start="arriving")
    bound = limit.combine(signing, smtp)
    chosen = median_round(measured)
    floor, piped = chosen["floor"], chosen["pipeline"]
    ratios = {}
    for name, part in (("pipeline", piped), ("per_batch_runs", per_batch),
                       ("pipeline_arriving", arriving)):
        for other, against in (("limit", bound), ("floor", floor), ("naive", naive)):
            ratios[f"{name}/{other}"] = round(part["per_second"] / against["per_second"], 3)
    return {
        "benchmark": "e2e",
        "messages": messages,
        "quick": quick,
        "peer": peer,
        "machine": machine(),
        "limit": {**bound, "rsa2048_signatures_all_cores": signing, "peer_accept": smtp},
        "floor": floor,
        "naive": naive,
        "pipeline": piped,
        "pipeline_per_batch_runs": per_batch,
        "pipeline_arriving": arriving,
        "ratios": ratios,
        "rounds": [{"first": r["first"], "floor": r["floor"]["per_second"],
                    "pipeline": r["pipeline"]["per_second"],
                    "pipeline/floor": round(_pipeline_over_floor(r), 3),
                    "chosen": r is chosen} for r in measured],
        "machine_share": share.finish(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds of the floor and the pipeline (default 5)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peer", choices=PEERS, default="c",
                        help="c: Postfix's smtp-sink (the default); python: `notify sink`")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.peer == "c" and not smtp_sink_available():
        sys.exit(SMTP_SINK_MISSING)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args.messages, quick=args.quick, peer=args.peer,
                     workdir=args.workdir.resolve(), rounds=args.rounds)
    else:
        with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
            result = run(args.messages, quick=args.quick, peer=args.peer, workdir=Path(tmp),
                         rounds=args.rounds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

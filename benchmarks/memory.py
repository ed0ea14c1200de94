"""Peak memory of the pipeline as the message count grows (flat is the goal).

    python -m benchmarks.memory [--messages 1000 10000]      # the default
    python -m benchmarks.memory --messages 100000            # ~10 minutes; run it on its own

Each count is a separate `benchmarks.pipeline` measurement with a fresh deployment; the JSON
gives the driver's exact peak RSS and the sampled peak of its whole process tree.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import pipeline
from benchmarks.harness import machine


def run(counts: list[int], workdir: Path) -> dict[str, Any]:
    rows = []
    with (workdir / "benchmark.log").open("ab") as log:
        for n in counts:
            result = pipeline.measure(workdir, n, log)
            rows.append({key: result[key] for key in (
                "messages", "per_second", "peak_rss_mb", "peak_tree_rss_mb", "exactly_once",
            )})
    return {"benchmark": "memory", "machine": machine(), "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args.messages, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="notify-memory-") as tmp:
            result = run(args.messages, Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

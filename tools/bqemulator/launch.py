"""Start bqemulator on 127.0.0.1 without DuckDB's spatial extension.

bqemulator 1.4.0 downloads the spatial extension at start-up and refuses to start without it; this
machine has no internet, and we use no GEOGRAPHY, so the loader is replaced with a no-op.
Runs from its own venv (tools/bqemulator/requirements.txt), not the project's.
"""

from __future__ import annotations

import argparse

from bqemulator.config import LogLevel, PersistenceMode, Settings
from bqemulator.server import run_forever
from bqemulator.storage.engine import DuckDBEngine


def _skip_spatial(_engine: DuckDBEngine) -> None:
    """No GEOGRAPHY support: ST_* functions fail at query time instead of start-up."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="REST port")
    parser.add_argument("--grpc-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--project", required=True, help="default project id")
    args = parser.parse_args()
    DuckDBEngine._load_spatial = _skip_spatial  # type: ignore[method-assign]
    run_forever(Settings(
        rest_host=args.host,
        rest_port=args.port,
        grpc_host=args.host,
        grpc_port=args.grpc_port,
        default_project_id=args.project,
        persistence_mode=PersistenceMode.EPHEMERAL,
        enable_format_extensions=False,  # Avro loads only; its download would time out
        log_level=LogLevel.WARNING,
    ))


if __name__ == "__main__":
    main()

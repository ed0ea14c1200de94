"""The `notify` command line (docs/cli.md). Configuration comes from NOTIFY_* variables."""

from notify_pipeline.cli.main import _parser, main
from notify_pipeline.cli.process import process_once

__all__ = ["_parser", "main", "process_once"]

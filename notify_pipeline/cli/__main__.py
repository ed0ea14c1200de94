"""`python -m notify_pipeline.cli`: the same as the `notify` command."""

import sys

from notify_pipeline.cli.main import main

sys.exit(main())

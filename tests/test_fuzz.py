"""A short coverage-guided fuzz run of `tests/fuzz_decide.py`, as CI runs it (a few seconds)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_a_short_fuzz_run_finds_no_crash(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_decide", "-runs=1500", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 1500 runs" in result.stderr
    assert not list(tmp_path.iterdir()), "no crash input was written"

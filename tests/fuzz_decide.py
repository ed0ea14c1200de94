"""Coverage-guided fuzz target (atheris) over parse -> policy -> render -> DKIM.

The fuzzer's bytes either are the request body itself or, more often, fill the header-bound
fields of an otherwise valid request (subject, an extra header, a filename, a recipient's local
part), so that most inputs reach the renderer. Each input must be decided without raising, and
an accepted one must render with only the headers we own and verify (`test_properties`).

A short run is part of the test suite (`tests/test_fuzz.py`); a longer one by hand:
`.venv/bin/python -m tests.fuzz_decide -max_total_time=600`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["notify_pipeline", "email"]):
    from tests.helpers import request_dict
    from tests.test_properties import World, check_decision


def request_from(data: bytes) -> bytes:
    """`data` as a body, or as the text of the header-bound fields of a valid request."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    subject, header, filename, local = (fdp.ConsumeUnicode(60) for _ in range(4))
    body = request_dict(
        subject=subject,
        headers={"X-Campaign": header},
        attachments=[{"filename": filename or "a.txt", "content_type": "text/plain",
                      "content_base64": ""}],
        cc=[f"{local or 'x'}@example.org"],
    )
    return json.dumps(body, ensure_ascii=fdp.ConsumeBool()).encode("utf-8", "surrogatepass")


def main() -> None:
    with tempfile.TemporaryDirectory() as keys_dir:
        world = World.build(Path(keys_dir))
        atheris.Setup(sys.argv, lambda data: check_decision(world, request_from(data)))
        atheris.Fuzz()


if __name__ == "__main__":
    main()

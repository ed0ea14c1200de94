"""docs/reliability.md's generator: what it reads from hypothesis, and the section it writes."""

from __future__ import annotations

from benchmarks import reliability
from benchmarks.harness import write_section

STATISTICS = """
tests/test_properties.py::test_a:

  - during reuse phase (0.01 seconds):
    - 3 passing, 0 failing, and 0 invalid test cases

  - during generate phase (1.2 seconds):
    - 197 passing, 0 failing, and 4 invalid test cases

tests/test_properties.py::test_b:

  - during generate phase (0.3 seconds):
    - 12 passing, 1 failing, and 0 invalid test cases
"""


def test_each_property_counts_the_examples_of_every_phase() -> None:
    failed = "FAILED tests/test_properties.py::test_b"
    output = f"...\n==== Hypothesis Statistics ====\n{STATISTICS}\n{failed}"

    rows = reliability._property_rows(output)

    assert rows == [
        {"case": "property `test_a`", "tried": 200, "held": 200, "lost": 0},
        {"case": "property `test_b`", "tried": 13, "held": 12, "lost": 1},
    ]


def test_the_section_lists_every_case_with_totals_and_keeps_the_prose(tmp_path) -> None:
    fault = {"case": "smtp RCPT 552", "tried": 5, "held": 5, "lost": 0,
             "faulty_ended": "bounce 552 5.2.2 mailbox full", "peer_attempts": 1, "passes": 1}
    restart = {"case": "smtp server restarted mid-run", "tried": 5, "held": 4, "lost": 1,
               "faulty_ended": "", "peer_attempts": 0, "passes": 2, "restarts": 1,
               "ambiguous": 1}
    results = {"machine": {"cores": 2, "cpu_model": "cpu", "python": "3.11"},
               "measured": "2026-12-02 18:00 UTC", "load_before": [1.0], "load_after": [2.0],
               "faults": [fault, restart],
               "hostile": [{"case": "property `p`", "tried": 1200, "held": 1200, "lost": 0}]}
    doc = tmp_path / "reliability.md"
    doc.write_text(f"# R\n\nprose\n\n{reliability.START}\nold\n{reliability.END}\ntail\n")

    write_section(doc, reliability.render(results), start=reliability.START,
                  end=reliability.END, title="Reliability")

    text = doc.read_text()
    assert text.startswith("# R\n\nprose\n\n") and text.endswith(f"{reliability.END}\ntail\n")
    assert "old" not in text
    assert "| smtp RCPT 552 | 5 | 5 | 0 | bounce 552 5.2.2 mailbox full | 1 | 1 |" in text
    assert "1 restart; 1 hand-off(s) cut short" in text
    assert "**2 cases, 10 messages: 9 held, 1 lost**" in text
    assert "| property `p` | 1,200 | 1,200 | 0 |" in text
    assert "Not run yet" in text

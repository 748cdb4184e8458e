"""One client speaks for a process's retry lines: a fleet worker with its broker down prints the
lines of one node, with the count of the others', not one line per node per attempt."""

from __future__ import annotations

from broker.refusals import RetryLines

DOWN = "[Errno 111] Connection refused"


def test_a_lone_client_prints_every_attempt() -> None:
    lines = RetryLines(window_s=10)
    assert [lines.admit(DOWN, "stream", t) for t in (0.0, 0.2, 0.5, 1.1, 2.4)] == [0] * 5


def test_many_clients_print_the_speakers_lines_with_the_others_counted() -> None:
    lines = RetryLines(window_s=10)
    assert lines.admit(DOWN, "node-0000", 0.0) == 0
    held = [lines.admit(DOWN, f"node-{i:04d}", 0.1) for i in range(1, 50)]
    assert held == [None] * 49
    assert lines.admit(DOWN, "node-0000", 0.3) == 49  # the speaker's next line counts them
    assert lines.admit(DOWN, "node-0001", 0.4) is None
    assert lines.admit(DOWN, "node-0000", 1.0) == 1


def test_another_client_takes_over_when_the_speaker_falls_silent() -> None:
    lines = RetryLines(window_s=10)
    assert lines.admit(DOWN, "node-0000", 0.0) == 0  # then node-0000 connects, or stops
    assert lines.admit(DOWN, "node-0001", 5.0) is None
    assert lines.admit(DOWN, "node-0001", 10.0) == 1
    assert lines.admit(DOWN, "node-0000", 11.0) is None


def test_each_kind_of_failure_has_its_own_speaker() -> None:
    lines = RetryLines(window_s=10)
    assert lines.admit(DOWN, "node-0000", 0.0) == 0
    assert lines.admit("timed out", "node-0001", 0.1) == 0
    assert lines.admit(DOWN, "node-0001", 0.2) is None

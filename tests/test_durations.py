"""Durations as 1.x manifests and pfs's options write them (pfs.core.durations)."""

import pytest

from pfs.core import durations


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("300ms", 0.3), (".5s", 0.5), ("7d", 604800),
    ("2h45m30s", 9930), ("1us", 1e-6), ("1µs", 1e-6), ("0s", 0),
])
def test_a_duration_is_read_as_go_writes_it(text, seconds):
    assert durations.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5 m", "-5s", "1h-1m", "5x", "٣s", "３s", "1e3s", "5mm"])
def test_what_is_no_duration_is_none(text):
    assert durations.parse(text) is None


@pytest.mark.parametrize("seconds, text", [(90, "1m30s"), (0.25, "250ms"), (86400, "24h"), (5400, "1h30m"),
                                           (2.5, "2.5s"), (3600.5, "1h0.5s")])
def test_a_duration_is_shown_as_it_reads_back(seconds, text):
    assert durations.text(seconds) == text and durations.parse(text) == pytest.approx(seconds)

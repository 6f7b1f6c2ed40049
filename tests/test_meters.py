"""meters.py: the time format of the estimate and the epoch lines."""
import meters


def test_format_seconds():
    assert meters.format_seconds(45.2) == "45 s"
    assert meters.format_seconds(750) == "12 min 30 s"
    assert meters.format_seconds(3900) == "1 h 05 min"

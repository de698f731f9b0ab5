"""Durations as people write them: Go's form, which Pachyderm's manifests use (a number and a unit, several in a
row: 90s, 5m, 1h30m, 1.5h, 300ms), and d for days (7d); and back, for showing one."""

import re

UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h|d)")
_WHOLE = re.compile(f"(?:{_PART.pattern})+")


def parse(text: str) -> float | None:
    """The seconds TEXT stands for, or None where it is not a duration."""
    if not _WHOLE.fullmatch(text):
        return None
    return sum(float(number) * UNITS[unit] for number, unit in _PART.findall(text))


def text(seconds: float) -> str:
    """SECONDS as parse reads it back, shortest first: 90 -> 1m30s, 0.25 -> 250ms, 86400 -> 24h."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    whole, fraction = divmod(seconds, 1)
    hours, rest = divmod(int(whole), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs + fraction:g}s" if secs or fraction else ""]
    return "".join(parts)

"""Whether the kernel's OOM killer struck in this worker while its command ran: how the shim tells a command killed
for passing its memory limit (a pod's, a container's) from one that failed by itself.

The kernel counts the processes it killed for memory in each memory cgroup: `oom_kill` in memory.events (cgroup v2)
or memory.oom_control (v1). The command, usually the biggest process of its container, is the one it picks, and
exits killed (137 from a shell); the runner sees the container as OOMKilled only after the shim has reported, so
the shim says it itself. Reads only: where no count can be read (no memory controller), it says nothing.
"""

from collections.abc import Iterator
from pathlib import Path

CGROUPS = Path("/sys/fs/cgroup")
SAID = "after the kernel killed a process of this worker for using more memory than its limit (OOM)"


class Watch:
    """The OOM kills in this process's memory cgroup from its making on."""

    def __init__(self, cgroups: Path = CGROUPS, membership: Path = Path("/proc/self/cgroup")) -> None:
        self._file = next((f for f in _counters(cgroups, membership) if _kills(f) is not None), None)
        self._start = _kills(self._file) if self._file else None

    def struck(self) -> bool:
        """Whether the kernel killed a process of this cgroup for memory since the watch began."""
        return self._start is not None and (_kills(self._file) or 0) > self._start


def _counters(cgroups: Path, membership: Path) -> Iterator[Path]:
    """The files that may count this process's OOM kills, its own cgroup's first: the path /proc/self/cgroup names
    under the hierarchy's mount, else the mount itself (a container sees its own cgroup there, under a path that
    names it as the host does)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            root, name = cgroups, "memory.events"
        elif "memory" in controllers.split(","):
            root, name = cgroups / "memory", "memory.oom_control"
        else:
            continue
        yield root / path.lstrip("/") / name
        yield root / name


def _kills(counter: Path) -> int | None:
    try:
        text = counter.read_text()
    except OSError:
        return None
    return next((int(value) for key, _, value in (line.partition(" ") for line in text.splitlines())
                 if key == "oom_kill" and value.strip().isdigit()), None)

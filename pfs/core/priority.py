"""CPU priority of spare workers: they start at SCHED_IDLE, so loading Python and their mounts takes only time no
running worker wants (nice 19 still took about 1.5% of a core from each), and run as any process once given a
shard. Only root may raise a priority again, so only a server run by root starts them low."""

import os

from pfs.core import tools


def idle() -> list[str]:
    """The prefix that runs a command at SCHED_IDLE."""
    return [tools.require("chrt"), "--idle", "0"]


def restore(pids: list[int]) -> None:
    """Every thread of PIDS back to the normal policy at niceness 0 (where this process may: root)."""
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:  # it ended
            continue
        for tid in map(int, threads):
            try:
                if os.sched_getscheduler(tid) != os.SCHED_OTHER:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                    os.setpriority(os.PRIO_PROCESS, tid, 0)
            except (ProcessLookupError, PermissionError):  # a thread that ended; not root (never lowered)
                pass

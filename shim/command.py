"""Running the user's command: exec'd (no shell unless the command is one), stdin lines fed, output logged."""

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Sequence
from typing import IO

from pfs.core import tools
from shim.logs import Logs

DIE_WITH_PARENT = tools.die_with_parent("KILL", required=False)
# The OOM killer's first choice in its cgroup (raising one's own score needs no privilege): a command past its
# container's memory limit is what goes, and the shim reports it, rather than the worker itself, whose try would
# then end unreported. That holds where the worker's score is lower (0 outside Kubernetes, -997 in a Guaranteed
# pod); in a Burstable pod the kubelet gives every process of the container 2..999 already, and size decides.
FIRST_TO_GO = ["choom", "-n", "1000", "--"] if shutil.which("choom") else []

STDERR_TAIL = 20  # lines of stderr kept for the error of a failed shard
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


def run(cmd: Sequence[str], stdin: Sequence[str], env: dict[str, str], logs: Logs,
        user: tuple[int, int] | None = None) -> tuple[int, list[str]]:
    """Runs CMD to its end (it is killed if the shim dies or is stopped, and what it leaves running once it ends),
    as USER (uid, gid; with no other groups) where one is given; its exit code and last stderr lines."""
    if shutil.which(cmd[0], path=env.get("PATH")) is None:
        message = f"cannot run {cmd[0]!r}: no such command"
        logs.line("stderr", message)
        return 127, [message]
    _adopt_orphans()
    before = _children()
    proc = subprocess.Popen([*DIE_WITH_PARENT, *FIRST_TO_GO, *cmd], stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            **({} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}))
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", logs, None), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", logs, tail), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        if stdin:
            _feed(proc.stdin, stdin)
        code = proc.wait()
    except BaseException:  # the shim is stopped: so is the command
        proc.kill()
        raise
    finally:
        _end_left(before)
    for t in readers:
        t.join()
    return code, list(tail)


def _adopt_orphans() -> None:
    """Makes this process the one the command's orphans are given to, rather than init (a child subreaper), so
    that _end_left finds them."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children() -> set[int]:
    """The pids of this process's children (those of every thread)."""
    pids = set()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
    return pids


def _end_left(before: set[int]) -> None:
    """Kills and reaps what the command left running: every child of this process but those of BEFORE (its
    mount), and then theirs, given to it in turn. Left alone, a `sleep &` or a daemon of the command's held its
    output pipes (and so this worker) open for as long as it ran, could write to /pfs/out while it was read, and
    ran on beside the next try."""
    while left := _children() - before:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _feed(pipe: IO[bytes], lines: Sequence[str]) -> None:
    try:
        with pipe:
            for line in lines:
                pipe.write(line.encode() + b"\n")
    except BrokenPipeError:  # the command stopped reading: that is its business
        pass


def _pump(pipe: IO[bytes], stream: str, logs: Logs, tail: deque | None) -> None:
    with pipe:
        for raw in pipe:
            text = raw.decode(errors="replace").rstrip("\n")
            logs.line(stream, text)
            if tail is not None:
                tail.append(text)

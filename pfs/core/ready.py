"""Readiness between processes: a child says it is up on a pipe its parent gave it, as sd_notify does.

The parent starts the child with `--ready-fd N`, N the write end of a pipe
(spawn()); once ready, the child writes one JSON object on one line there
(notify(): what the parent needs, such as the address it listens on) and
closes it. The parent reads that line (wait_ready()); the pipe closed without
one means the child failed, and its stderr says why. The lines a process
prints for people stay as they are; no process parses them.
"""

import argparse
import json
import os
import select
import subprocess
import time

FLAG = "--ready-fd"


def ready_fd(value: str) -> int:
    """An argparse type for FLAG: an open file descriptor, kept from the processes this one starts."""
    try:
        fd = int(value)
        os.set_inheritable(fd, False)
    except (ValueError, OSError, OverflowError):
        raise argparse.ArgumentTypeError(f"{value} is not an open file descriptor (give a pipe's write end)") from None
    return fd


def notify(fd: int | None, **fields: object) -> None:
    """Tells the parent this process is ready: FIELDS as one JSON line on FD, then FD closed (no FD: nothing)."""
    if fd is None:
        return
    try:
        with open(fd, "w") as pipe:
            pipe.write(json.dumps(fields) + "\n")
    except BrokenPipeError:  # the parent stopped waiting: nobody to tell
        pass


def spawn(cmd: list[str], **popen) -> tuple[subprocess.Popen, int]:
    """Starts CMD with FLAG and a pipe's write end added; returns the process and the pipe's read end to wait on."""
    read, write = os.pipe()
    try:
        proc = subprocess.Popen([*cmd, FLAG, str(write)], pass_fds=(write,), **popen)
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)  # the child's copy is the only one left: its exit closes the pipe
    return proc, read


def wait_ready(fd: int, timeout: float | None = None) -> dict | None:
    """The line the child wrote on the pipe whose read end is FD (closed here); None if it closed it without one.

    Raises TimeoutError if neither happened within TIMEOUT seconds (None: waits as long as it takes).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    data = b""
    try:
        while not data.endswith(b"\n"):
            left = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            if not poll.poll(left):
                raise TimeoutError(f"not ready within {timeout:g} s")
            more = os.read(fd, 4096)
            if not more:
                return None
            data += more
    finally:
        os.close(fd)
    return json.loads(data)

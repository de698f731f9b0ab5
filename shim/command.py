"""Running the user's command: exec'd (no shell unless the command is one), stdin lines fed, output logged."""

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from pfs.core.model import MAX_LOG_TEXT
from shim.logs import Logs

PIDNS = str(Path(__file__).with_name("pidns.py"))
# The OOM killer's first choice in its cgroup (raising one's own score needs no privilege): a command past its
# container's memory limit is what goes, and the shim reports it, rather than the worker itself, whose try would
# then end unreported. That holds where the worker's score is lower (0 outside Kubernetes, -997 in a Guaranteed
# pod); in a Burstable pod the kubelet gives every process of the container 2..999 already, and size decides.
CHOOM = shutil.which("choom")  # by its path: the command's PATH (transform.env) may not lead to it
FIRST_TO_GO = [CHOOM, "-n", "1000", "--"] if CHOOM else []

STDERR_TAIL = 20  # lines of stderr kept for the error of a failed shard
LINE_BYTES = 4 * MAX_LOG_TEXT  # read of a line at once: what a log keeps of it, in UTF-8's longest characters


def run(cmd: Sequence[str], stdin: Sequence[str], env: dict[str, str], logs: Logs, user: tuple[int, int] | None,
        tmp: Path, max_processes: int, timeout: float = 0.0) -> tuple[int, list[str], bool]:
    """Runs CMD to its end, in a PID namespace of its own (shim/pidns.py: what it leaves running ends with it, and
    it all ends if the shim dies or is stopped), as USER (uid, gid; with no other groups and at most MAX_PROCESSES
    processes of that uid) where one is given, with TMP as its /tmp, killed after TIMEOUT seconds (0: never); its
    exit code, last stderr lines, and whether the timeout killed it."""
    if shutil.which(cmd[0], path=env.get("PATH")) is None:
        message = f"cannot run {cmd[0]!r}: no such command"
        logs.line("stderr", message)
        return 127, [message], False
    uid, gid = user or (-1, -1)
    env_r, env_w = os.pipe()
    with open(env_w, "wb") as env_pipe:  # the command's alone, not its init's (shim/pidns.py)
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", PIDNS, str(os.getpid()), str(env_r), str(uid),
                                     str(gid), str(max_processes), str(tmp), *FIRST_TO_GO, *cmd], env={},
                                    pass_fds=[env_r],
                                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        finally:
            os.close(env_r)
        env_pipe.write(b"".join(b"\0" + os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()))
    tail: deque[str] = deque(maxlen=STDERR_TAIL)
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", logs, None), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", logs, tail), daemon=True),
    ]
    for t in readers:
        t.start()
    killed = threading.Event()

    def kill() -> None:  # its namespace's init, and with it all the command runs, dies too
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    if timeout:
        timer.start()
    try:
        if stdin:
            _feed(proc.stdin, stdin)
        code = proc.wait()
    except BaseException:  # the shim is stopped: so is the command
        proc.kill()
        raise
    finally:
        timer.cancel()
    for t in readers:
        t.join()
    return code, list(tail), killed.is_set() and code == -signal.SIGKILL


def _feed(pipe: IO[bytes], lines: Sequence[str]) -> None:
    try:
        with pipe:
            for line in lines:
                pipe.write(line.encode() + b"\n")
    except BrokenPipeError:  # the command stopped reading: that is its business
        pass


def _pump(pipe: IO[bytes], stream: str, logs: Logs, tail: deque | None) -> None:
    with pipe:
        for raw in iter(lambda: pipe.readline(LINE_BYTES), b""):  # a line of gigabytes, in pieces
            text = raw.decode(errors="replace").rstrip("\n").replace("\0", "\ufffd")  # NUL: no store's text holds it
            logs.line(stream, text)
            if tail is not None:
                tail.append(text)

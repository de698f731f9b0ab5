"""The command's own PID namespace: whatever the command starts ends with it, and with the worker.

Run by shim/command.py as a script (`python -I -S pidns.py WORKER ENV_FD UID GID NPROC TMP CMD...`; standard library
only, so it starts in a hundredth of a second): this process, the worker's child, makes a PID namespace whose first
process (its init, a fork of this one) runs CMD as UID and GID (-1: as the worker) and reaps every orphan the
command leaves there. A command run as UID may have at most NPROC processes and threads at once (RLIMIT_NPROC, which
the kernel counts for all of UID's on the machine): a fork bomb is refused more processes there, and the machine and
its other work go on. The command's environment comes from ENV_FD (NAME=VALUE, each after a NUL), read whole before
anything else, and is CMD's alone: these processes, which may be root's, run in an empty one, so that nothing the
command is given (LD_PRELOAD, LD_LIBRARY_PATH) runs with their privilege. When the command ends, the init reports
how, then exits, and the kernel kills everything still in the namespace: a `sleep &`, a daemon of its own session.
This process then ends as the command did (with its exit code, or killed by its signal), so the worker sees the
command's own status.

The namespace has its own /proc (in a mount namespace of its own, so the worker's stays), where the command's
pids are its own: /proc/$$ is the command's shell, as a process expects. Where that mount is refused, the
command sees the worker's /proc. The command gets a /tmp and /var/tmp of its own (TMP, bound there) and a
/dev/shm of its own (a tmpfs), as a container's command does: it shares its temporary files neither with the
other workers of its job, nor with other users' commands (which may run as the same uid, nobody), nor leaves
them behind on the machine. Only the command's namespace has them: the worker's /tmp stays the machine's (where
the worker's own code may be installed), so links in /pfs/out into them are not output (shim/output.py).

If the worker dies (kill -9, the OOM killer), this process gets SIGKILL from the kernel, and the init in turn:
nothing of the command outlives it, where a subreaper worker's orphans would go to the host's init.
"""

import ctypes
import errno
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
PIDS_BELOW, PIDS_ABOVE = 300, 10000  # the pids a namespace's first stays clear of: the kernel's, and room to grow
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 1 << 12, 1 << 14, 1 << 18
OWN_TMP_DIRS, OWN_SHM = ("/tmp", "/var/tmp"), "/dev/shm"  # what a command has of its own


def main(worker: int, env_fd: int, uid: int, gid: int, nproc: int, tmp: str, cmd: list[str]) -> None:
    with os.fdopen(env_fd, "rb") as f:
        env = dict(item.partition(b"=")[::2] for item in f.read().split(b"\0")[1:])
    libc = ctypes.CDLL(None, use_errno=True)
    _die_with(libc, lambda: os.getppid() == worker)
    if libc.unshare(CLONE_NEWPID | CLONE_NEWNS) != 0:
        _fail(f"cannot set up a PID namespace: {os.strerror(ctypes.get_errno())}")
    libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)  # as the worker's are: its /proc stays its own
    cwd = os.getcwd()
    _own_tmp(libc, tmp.encode())
    if any(cwd == d or cwd.startswith(d + "/") for d in OWN_TMP_DIRS):  # the worker's, in the machine's /tmp,
        os.chdir("/tmp")  # which the command does not see: it starts in its own
    status_r, status_w = os.pipe()
    alive_r, alive_w = os.pipe()  # held open by this process: the init reads its end once, to know it lives
    init = os.fork()
    if init == 0:
        os.close(status_r)
        os.close(alive_w)
        _die_with(libc, lambda: _open(alive_r))
        libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        _scatter_pids()
        os.write(status_w, str(_init(cmd, env, uid, gid, nproc)).encode())
        os._exit(0)  # and with it, all that is left in the namespace
    os.close(status_w)
    os.waitpid(init, 0)
    with os.fdopen(status_r, "rb") as f:
        status = f.read()
    _end_as(int(status) if status else signal.SIGKILL)  # no status: the init was killed


def _init(cmd: list[str], env: dict[bytes, bytes], uid: int, gid: int, nproc: int) -> int:
    """Runs CMD, in ENV, as the namespace's first process's child; its wait status, once every orphan before it is
    reaped."""
    for sig in FORWARDED:  # until the command is there to be given them
        signal.signal(sig, signal.SIG_IGN)
    command = os.fork()
    if command == 0:
        for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):  # an ignored signal stays so in CMD
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.setsid()  # a process group of its own: its `kill 0` reaches its own processes, not the worker
            if uid >= 0:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                if not os.access(".", os.X_OK):  # the worker's directory, which it may not enter
                    os.chdir("/")
            os.execvpe(cmd[0], cmd, env)
        except OSError as err:
            said = f"cannot run {cmd[0]!r}: {err.strerror}"
            if err.errno == errno.EAGAIN:  # set*uid let it through; exec refuses it
                said = (f"cannot run the command: uid {uid} already has as many processes on this machine as a "
                        f"command may ({nproc}: pfs server --max-processes)")
            print(said, file=sys.stderr, flush=True)
        os._exit(127)
    for sig in FORWARDED:  # as tini does: a signal sent to the namespace's first process is the command's
        signal.signal(sig, lambda sig, _: _forward(command, sig))
    while True:
        pid, status = os.wait()  # the command, or an orphan of its, given to this process
        if pid == command:
            return status


def _forward(command: int, sig: int) -> None:
    try:
        os.kill(command, sig)
    except ProcessLookupError:  # it ended and was reaped before the handler ran: nobody to pass it on to
        pass


def _own_tmp(libc: ctypes.CDLL, tmp: bytes) -> None:
    """TMP at /tmp and /var/tmp, and a tmpfs at /dev/shm, in this mount namespace."""
    for target in OWN_TMP_DIRS:
        if os.path.isdir(target) and libc.mount(tmp, target.encode(), None, MS_BIND, None) != 0:
            _fail(f"cannot bind the command's own {target}: {os.strerror(ctypes.get_errno())}")
    if os.path.isdir(OWN_SHM) and libc.mount(b"tmpfs", OWN_SHM.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                                             b"mode=1777") != 0:
        _fail(f"cannot mount the command's own {OWN_SHM}: {os.strerror(ctypes.get_errno())}")


def _scatter_pids() -> None:
    """Has the namespace's pids start at a random one, as far as the kernel allows: otherwise the command of every
    worker is pid 2, and a script's /tmp/part.$$, unique among one machine's processes, is every worker's."""
    with open("/proc/sys/kernel/pid_max") as f:
        top = int(f.read()) - PIDS_ABOVE
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(PIDS_BELOW + int.from_bytes(os.urandom(4), "little") % max(top - PIDS_BELOW, 1)))
    except OSError:  # no CAP_SYS_ADMIN over the namespace, or no /proc/sys: pids from 2
        pass


def _die_with(libc: ctypes.CDLL, parent_lives) -> None:
    """Has the kernel kill this process when its parent dies; exits at once if it has died already."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if not parent_lives():
        os._exit(128 + signal.SIGKILL)


def _open(fd: int) -> bool:
    """Whether the pipe FD reads from is still open at its other end."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1) != b""
    except BlockingIOError:
        return True


def _end_as(status: int) -> None:
    """Ends this process as a child with wait status STATUS ended: with its code, or killed by its signal."""
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the command's core dump, if any, was its own
    if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal that does not end a process by default, if one ever ends the command


def _fail(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(126)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:6]), sys.argv[6], sys.argv[7:])

"""The worker's inputs: one `pfs mount --inputs` process serving every input, each bound at /pfs/<name>.

pyfuse3 serves one filesystem per process, so the mount shows every input
below a directory of its own (a temporary one in /pfs, unmounted and removed
once each input's directory there is bound at /pfs/<name>), beside /pfs/out,
which stays a local directory. The process starts before the worker knows
its job, so starting Python and loading FUSE overlap with asking for it; the
inputs follow on its standard input. It is started through `setpriv
--pdeathsig` (util-linux) so that it ends when the shim dies, and a killed
worker leaves no mount behind (its binds go with its mount namespace). (Not
preexec_fn: forking a process that runs gRPC threads breaks the child.)
"""

import os
import signal
import subprocess
import sys
import tempfile
import threading

from pfs.core import mount_inputs, tools
from pfs.core.errors import FailedPrecondition
from pfs.core.mount_inputs import MountInput
from pfs.core.ready import spawn, wait_ready
from shim import namespace

STOP_TIMEOUT = 10.0
DIE_WITH_PARENT = tools.die_with_parent("TERM", required=False)  # TERM: unmounts


class Mounts:
    """One mount started at once, given its inputs by mount(), unbound and unmounted by stop() and close()."""

    def __init__(self, address: str, root: str, allow_other: bool = False) -> None:
        """Starts the mount, at a new directory in ROOT (/pfs, gone before the command starts; a killed worker's
        goes with its workspace); with ALLOW_OTHER the command may run as another user, who reads it too."""
        os.makedirs(root, exist_ok=True)
        self._dir = tempfile.mkdtemp(prefix=".inputs-", dir=root)
        cmd = [*DIE_WITH_PARENT, sys.executable, "-P", "-m", "pfs", "--address", address, "mount", self._dir,
               "--inputs", "-", *(["--allow-other"] if allow_other else [])]
        try:
            self._proc, self._ready = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE)
        except BaseException:
            os.rmdir(self._dir)
            raise
        self._bound: list[str] = []
        self._forwarding = False  # its stderr, read by a thread once it is up

    @property
    def pid(self) -> int:
        """The mount process's."""
        return self._proc.pid

    def __enter__(self) -> "Mounts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mount(self, inputs: dict[str, MountInput], token: str | None) -> None:
        """Shows each of INPUTS, read with TOKEN, at the directory it is keyed by (made if need be), once the mount
        is up."""
        try:
            with self._proc.stdin as pipe:
                pipe.write(mount_inputs.dumps(list(inputs.values()), token).encode())
        except BrokenPipeError:  # it failed already: its stderr says why
            pass
        ready, self._ready = self._ready, None
        if wait_ready(ready) is None:
            with self._proc.stderr:
                said = " ".join(self._proc.stderr.read().decode(errors="replace").split()) or "mount exited"
            self._proc.wait()
            shown = ", ".join(f"{i.commit} at {target}" for target, i in inputs.items())
            raise FailedPrecondition(f"cannot mount {shown}: {said}")
        threading.Thread(target=_forward, args=(self._proc.stderr,), daemon=True).start()
        self._forwarding = True
        for target, i in inputs.items():
            os.makedirs(target, exist_ok=True)
            namespace.bind(os.path.join(self._dir, i.name), target)
            self._bound.append(target)
        # the binds alone keep it now, so nothing is left behind to remove if this worker is killed: once they
        # go, the kernel ends the mount and its process (it may stop it sooner)
        namespace.unbind(self._dir)
        os.rmdir(self._dir)
        self._dir = None

    def stop(self) -> None:
        """Unbinds the inputs and asks the mount to unmount (it does on SIGTERM), without waiting for it."""
        while self._bound:
            namespace.unbind(self._bound.pop())
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Unmounts and waits until the mount is gone; a second call has nothing left to do."""
        if self._proc is None:
            return
        self.stop()
        if self._ready is not None:  # never given its inputs
            os.close(self._ready)
            self._proc.stdin.close()
        if not self._forwarding:
            self._proc.stderr.close()
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._dir is not None:  # its inputs never bound
            if os.path.ismount(self._dir):
                subprocess.run([tools.require("fusermount"), "-u", "-z", self._dir], capture_output=True)
            os.rmdir(self._dir)
        self._proc = None


def _forward(pipe) -> None:
    """The mount's own messages (errors it answered with EIO, say) go to the worker's stderr."""
    with pipe:
        for raw in pipe:
            sys.stderr.write(raw.decode(errors="replace"))

"""The worker's inputs: one `pfs mount --commit` process per input, each showing its shard at /pfs/<name>.

pyfuse3 serves one filesystem per process, so each input gets its own. The
mounts are started through `setpriv --pdeathsig` (util-linux) so that they
unmount when the shim dies, and a killed worker leaves no mount behind. (Not
preexec_fn: forking a process that runs gRPC threads breaks the child.)
"""

import os
import signal
import subprocess
import sys
import threading

from pfs.core import tools
from pfs.core.errors import FailedPrecondition
from pfs.core.model import CommitRef
from pfs.core.ready import spawn, wait_ready
from pfs.core.shard import Shard

STOP_TIMEOUT = 10.0
DIE_WITH_PARENT = tools.die_with_parent("TERM", required=False)  # TERM: unmounts


class Mounts:
    """Mounts started with add() (all at once), waited for by wait(), unmounted together by stop() and close()."""

    def __init__(self, address: str, allow_other: bool = False) -> None:
        self.address = address
        self.allow_other = allow_other  # the command runs as another user, who reads them too
        self._procs: list[tuple[str, CommitRef, subprocess.Popen]] = []
        self._ready: list[int | None] = []  # the read end of each mount's ready pipe, until waited for

    def __enter__(self) -> "Mounts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, mountpoint: str, commit: CommitRef, shard: Shard, since: str = "", incremental: str = "diff") -> None:
        """Starts mounting SHARD of COMMIT (what changed after SINCE, if given) at MOUNTPOINT."""
        os.makedirs(mountpoint, exist_ok=True)
        cmd = [*DIE_WITH_PARENT, sys.executable, "-P", "-m", "pfs", "--address", self.address, "mount", mountpoint,
               "--commit", str(commit), "--shard", f"{shard.index}/{shard.count}",
               "--method", shard.method]
        if since:
            cmd += ["--since", since, "--incremental", incremental]
        if self.allow_other:
            cmd.append("--allow-other")
        proc, ready = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._procs.append((mountpoint, commit, proc))
        self._ready.append(ready)

    def wait(self) -> None:
        """Returns once every mount is up (they start together: each is a Python process to start)."""
        for i, (mountpoint, commit, proc) in enumerate(self._procs):
            ready, self._ready[i] = self._ready[i], None
            if ready is None:  # waited for already
                continue
            if wait_ready(ready) is None:
                with proc.stderr:
                    said = " ".join(proc.stderr.read().decode(errors="replace").split()) or "mount exited"
                proc.wait()
                raise FailedPrecondition(f"cannot mount {commit} at {mountpoint}: {said}")
            threading.Thread(target=_forward, args=(proc.stderr,), daemon=True).start()

    def stop(self) -> None:
        """Asks every mount to unmount (each unmounts itself on SIGTERM), without waiting for it."""
        for _, _, proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Unmounts them all and waits until they are gone; a second call has nothing left to do."""
        self.stop()
        for ready in [r for r in self._ready if r is not None]:  # not waited for
            os.close(ready)
        procs, self._procs, self._ready = self._procs, [], []
        for mountpoint, _, proc in procs:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if os.path.ismount(mountpoint):
                subprocess.run([tools.require("fusermount"), "-u", "-z", mountpoint], capture_output=True)


def _forward(pipe) -> None:
    """The mount's own messages (errors it answered with EIO, say) go to the worker's stderr."""
    with pipe:
        for raw in pipe:
            sys.stderr.write(raw.decode(errors="replace"))

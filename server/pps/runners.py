"""Runners: how the server starts a job's workers (`job-shim`, one per shard) and learns how they ended.

- local: job-shim processes on this machine, each in a private mount namespace with its own
  workspace at /pfs, as the server's own user (a server not run by root gives each a user namespace
  too). The pipeline's image is recorded but not used.
- container: podman or docker runs the pipeline's image (which must hold job-shim) with
  --device /dev/fuse --cap-add SYS_ADMIN, on the host network so it reaches this server.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from pfs.core import image_ref, tools, userns
from pfs.core.errors import FailedPrecondition, InvalidArgument
from pfs.core.model import JobInfo

ERROR_TAIL = 2000  # bytes of a worker's stderr kept when it ends without reporting
STOP_TIMEOUT = 10.0


class Runner(ABC):
    name = ""

    def __init__(self, address: str, token: str | None = None) -> None:
        self.address = address  # where workers reach this server
        self.token = token  # what workers show it (None: a server started with --no-token)
        self._procs: dict[subprocess.Popen, str] = {}  # running workers and their jobs
        self._lock = threading.Lock()
        self._closed = False

    @abstractmethod
    def command(self, job: JobInfo, shard: int, workspace: Path) -> list[str]:
        """The command that runs the worker of SHARD."""

    def check_tools(self) -> None:
        """Refuses, in one line, when a tool this runner needs is missing."""

    def env(self) -> dict[str, str]:
        """The environment of the process a worker starts with: this server's, and its token as PFS_TOKEN (in
        the environment, never on a command line that `ps` shows)."""
        env = {k: v for k, v in os.environ.items() if k != "PFS_TOKEN"}
        return env if self.token is None else {**env, "PFS_TOKEN": self.token}

    def check(self, image: str) -> None:
        """Refuses a pipeline this runner cannot run."""
        self.check_tools()

    def capacity(self) -> int:
        """What a COEFFICIENT parallelism multiplies: this machine's cores (workers of both runners run here)."""
        return os.cpu_count() or 1

    def run(self, job: JobInfo, shard: int, workspace: Path) -> tuple[int, str]:
        """Runs the worker of SHARD to its end; its exit status and the end of its stderr."""
        workspace.mkdir(parents=True, exist_ok=True)
        err_path = workspace.with_name(workspace.name + ".stderr")
        try:
            with open(err_path, "w+b") as err:
                with self._lock:
                    if self._closed:
                        return -signal.SIGTERM, "the server is stopping"
                    # a process group of its own: what the command left running ends with the worker
                    proc = subprocess.Popen(self.command(job, shard, workspace), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                            env=self.env())
                    self._procs[proc] = job.id
                try:
                    code = proc.wait()
                finally:
                    _kill_group(proc)
                    with self._lock:
                        self._procs.pop(proc, None)
                err.seek(max(0, err.seek(0, os.SEEK_END) - ERROR_TAIL))
                tail = err.read().decode(errors="replace").strip()
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
            err_path.unlink(missing_ok=True)
        return code, tail

    def stop(self, job_id: str) -> None:
        """Stops the workers of job JOB_ID: SIGTERM, then SIGKILL for those still there after STOP_TIMEOUT."""
        with self._lock:
            procs = [p for p, j in self._procs.items() if j == job_id]
        _stop(procs)

    def close(self) -> None:
        """Stops every worker (as stop() does, all within one STOP_TIMEOUT); no worker starts after it."""
        with self._lock:
            self._closed = True
            procs = list(self._procs)
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Asks PROCS to stop, and kills those still running STOP_TIMEOUT later."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        _kill_group(p)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kills what is left of the worker PROC started: its process group (the command's children, say)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left
        pass


class LocalRunner(Runner):
    name = "local"

    def __init__(self, address: str, token: str | None = None) -> None:
        super().__init__(address, token)
        shim = Path(sys.executable).with_name("job-shim")
        self.shim = str(shim) if shim.exists() else shutil.which("job-shim")

    def check_tools(self) -> None:
        if self.shim is None:
            raise FailedPrecondition("the local runner needs job-shim beside the server (pip install pfs)")
        problem = None if os.geteuid() == 0 else userns.unavailable()
        if problem:
            raise FailedPrecondition(f"the local runner gives each worker of a server not run by root a user "
                                     f"namespace, but {problem}; or start the server as root, or with --runner "
                                     "container")
        try:
            tools.require("setpriv")
        except FailedPrecondition as err:
            raise FailedPrecondition(f"the local runner needs setpriv: {err}") from None

    def command(self, job: JobInfo, shard: int, workspace: Path) -> list[str]:
        # the worker dies with the server (setpriv --pdeathsig): a restarted server runs the shard again
        return [*tools.die_with_parent("KILL"), self.shim, "--address", self.address, "--job", job.id,
                "--shard", str(shard), "--workspace", str(workspace)]


class ContainerRunner(Runner):
    name = "container"

    def __init__(self, address: str, token: str | None = None) -> None:
        super().__init__(address, token)
        self.engine = tools.container_engine()

    def check_tools(self) -> None:
        if self.engine is None:
            raise FailedPrecondition(f"the container runner needs podman or docker: {tools.INSTALL['engine']}")

    def check(self, image: str) -> None:
        super().check(image)
        if not image:
            raise InvalidArgument("manifest field transform.image: missing; the container runner runs workers "
                                  "in the pipeline's image (one with job-shim, e.g. FROM pfs/job-shim)")
        image_ref.parse(image)

    def command(self, job: JobInfo, shard: int, workspace: Path) -> list[str]:
        image = job.transform.image
        registry = image_ref.parse(image)[0]
        # a registry on loopback (where --push-images put the image, say) speaks plain HTTP
        podman = Path(self.engine or "").name == "podman"
        tls = ["--tls-verify=false"] if podman and registry and image_ref.is_loopback(registry) else []
        token = [] if self.token is None else ["-e", "PFS_TOKEN"]  # by name: its value is in the engine's env
        return [self.engine, "run", "--rm", *tls, *token, "--device", "/dev/fuse", "--cap-add", "SYS_ADMIN",
                "--network", "host", "--name", f"pfs-{workspace.name}", image,
                "job-shim", "--address", self.address, "--job", job.id, "--shard", str(shard)]


RUNNERS = {"local": LocalRunner, "container": ContainerRunner}

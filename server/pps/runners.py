"""Runners: how the server starts a job's workers (`job-shim`, one per shard) and learns how they ended.

- local: job-shim processes on this machine, each in a private mount namespace with its own
  workspace at /pfs (needs root). The pipeline's image is recorded but not used.
- container: podman or docker runs the pipeline's image (which must hold job-shim) with
  --device /dev/fuse --cap-add SYS_ADMIN, on the host network so it reaches this server.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from pfs.core import image_ref
from pfs.core.errors import FailedPrecondition, InvalidArgument
from pfs.core.model import JobInfo

ERROR_TAIL = 2000  # bytes of a worker's stderr kept when it ends without reporting
STOP_TIMEOUT = 10.0


class Runner(ABC):
    name = ""

    def __init__(self, address: str) -> None:
        self.address = address  # where workers reach this server
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    @abstractmethod
    def command(self, job: JobInfo, shard: int, workspace: Path) -> list[str]:
        """The command that runs the worker of SHARD."""

    def check(self, image: str) -> None:
        """Refuses a pipeline this runner cannot run."""

    def capacity(self) -> int:
        """What a COEFFICIENT parallelism multiplies: this machine's cores (workers of both runners run here)."""
        return os.cpu_count() or 1

    def run(self, job: JobInfo, shard: int, workspace: Path) -> tuple[int, str]:
        """Runs the worker of SHARD to its end; its exit status and the end of its stderr."""
        workspace.mkdir(parents=True, exist_ok=True)
        err_path = workspace.with_name(workspace.name + ".stderr")
        try:
            with open(err_path, "w+b") as err:
                proc = subprocess.Popen(self.command(job, shard, workspace), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err)
                with self._lock:
                    self._procs.add(proc)
                try:
                    code = proc.wait()
                finally:
                    with self._lock:
                        self._procs.discard(proc)
                err.seek(max(0, err.seek(0, os.SEEK_END) - ERROR_TAIL))
                tail = err.read().decode(errors="replace").strip()
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
            err_path.unlink(missing_ok=True)
        return code, tail

    def close(self) -> None:
        """Stops the workers still running."""
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()


class LocalRunner(Runner):
    name = "local"

    def __init__(self, address: str) -> None:
        super().__init__(address)
        shim = Path(sys.executable).with_name("job-shim")
        self.shim = str(shim) if shim.exists() else shutil.which("job-shim")

    def check(self, image: str) -> None:
        if self.shim is None:
            raise FailedPrecondition("job-shim is not installed beside the server (pip install pfs)")
        if os.geteuid() != 0:
            raise FailedPrecondition("the local runner needs a server running as root: each worker gets its own "
                                     "mount namespace (or start the server with --runner container)")

    def command(self, job: JobInfo, shard: int, workspace: Path) -> list[str]:
        # the worker dies with the server (setpriv --pdeathsig): a restarted server runs the shard again
        return ["setpriv", "--pdeathsig", "KILL", "--", self.shim, "--address", self.address, "--job", job.id,
                "--shard", str(shard), "--workspace", str(workspace)]


class ContainerRunner(Runner):
    name = "container"

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.engine = shutil.which("podman") or shutil.which("docker")

    def check(self, image: str) -> None:
        if self.engine is None:
            raise FailedPrecondition("the container runner needs podman or docker (apt-get install podman)")
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
        return [self.engine, "run", "--rm", *tls, "--device", "/dev/fuse", "--cap-add", "SYS_ADMIN",
                "--network", "host", "--name", f"pfs-{workspace.name}", image,
                "job-shim", "--address", self.address, "--job", job.id, "--shard", str(shard)]


RUNNERS = {"local": LocalRunner, "container": ContainerRunner}

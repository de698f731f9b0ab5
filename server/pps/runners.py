"""Runners: how the server starts a job's workers (`job-shim`, one per shard) and learns how they ended.

- local: job-shim processes on this machine, each in a private mount namespace with its own
  workspace at /pfs, as the server's own user (a server not run by root gives each a user namespace
  too). The pipeline's image is recorded but not used.
- container: podman or docker runs the pipeline's image (which must hold job-shim) with
  --device /dev/fuse --cap-add SYS_ADMIN, on the host network so it reaches this server.
- kubernetes: a Kubernetes Job per job, in the pipeline's image (server/pps/kubernetes/), made only when chosen,
  as its client is an extra.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pfs.core import image_ref, priority, run_as, tools, userns
from pfs.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from pfs.core.model import JobInfo
from pfs.core.pem import TLS_ENV

ERROR_TAIL = 2000  # bytes of a worker's stderr kept when it ends without reporting
STOP_TIMEOUT = 10.0
WORKERS_PER_CORE = 4  # workers of a machine's runner running at once, for each core (the rest of a job's wait)


@dataclass(frozen=True)
class Ended:
    """A worker that ended: its job, shard and try, its exit status and the end of its output; REASON, how it ended
    where its runner knows more than a status (a pod's: 'was killed for lack of memory (OOMKilled)')."""

    job: str
    shard: int
    attempt: int
    code: int
    tail: str
    reason: str = ""


@dataclass
class _Worker:
    proc: subprocess.Popen
    job: str
    shard: int
    attempt: int
    workspace: Path
    stderr: BinaryIO
    kill_at: float = math.inf  # when a worker asked to stop is killed


@dataclass
class _Spare:
    """A worker started before its shard is known (job-shim --standby), for the address it reports to."""

    proc: subprocess.Popen
    address: str
    workspace: Path
    stderr: BinaryIO


class Runner(ABC):
    """How a job's workers run, at the level of the job: launch its shards' workers, poll for those that ended,
    cancel the rest. No call waits for a worker, so one controller loop drives every job of the server."""

    name = ""

    def __init__(self, address: str) -> None:
        self.address = address  # where workers reach this server

    def check_tools(self) -> None:
        """Refuses, in one line, when a tool this runner needs is missing."""

    def check(self, image: str) -> None:
        """Refuses a pipeline this runner cannot run."""
        self.check_tools()

    def unconfined(self) -> str | None:
        """Why a worker's command could reach this server's secrets (its data dir and token), so that only the
        cluster's root may make pipelines here; None where it cannot: the worker runs elsewhere (a container),
        or as root, which runs another user's command as a user that is not (pfs/core/run_as.py)."""
        return None

    @abstractmethod
    def capacity(self) -> int:
        """What a COEFFICIENT parallelism multiplies."""

    def room(self) -> int:
        """How many more workers may start now (a machine's bound; a cluster's scheduler has its own)."""
        return sys.maxsize

    @abstractmethod
    def launch(self, job: JobInfo, shard: int, attempt: int, address: str, token: str | None) -> None:
        """Starts the worker of try ATTEMPT at SHARD, which reports to ADDRESS (the servers of the cluster, this
        one first) with TOKEN (its job's); it runs until it ends (see poll) or is cancelled."""

    @abstractmethod
    def running(self, job_id: str) -> dict[int, int]:
        """The shards of job JOB_ID with a worker here that poll() has not yet seen end, and the try of each."""

    @abstractmethod
    def jobs(self) -> set[str]:
        """The jobs with workers here."""

    @abstractmethod
    def poll(self) -> list[Ended]:
        """The workers that ended since the last poll, each told once."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stops the workers of job JOB_ID (which poll() need not tell of)."""

    @abstractmethod
    def close(self) -> None:
        """No worker starts after it; the workers that would not outlive this server are stopped."""


class ProcessRunner(Runner):
    """Workers as processes started here (job-shim, or the container engine running it), each with a workspace of
    its own; they end with the server."""

    def __init__(self, address: str, workspaces: Path, tls_ca: str | None = None,
                 max_processes: int = run_as.MAX_PROCESSES) -> None:
        super().__init__(address)
        self.workspaces = workspaces  # where each worker gets a directory of its own (local workers: their /pfs)
        self.tls_ca = tls_ca  # the CA workers trust, of a server serving TLS when its environment names none
        self.max_processes = max_processes  # of a command run as another user (job-shim's $PFS_MAX_PROCESSES)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    @abstractmethod
    def command(self, job: JobInfo, shard: int, attempt: int, workspace: Path, address: str,
                token: str | None) -> list[str]:
        """The command that runs the worker of try ATTEMPT at SHARD, reporting to ADDRESS with TOKEN (None: to a
        server that asks for none)."""

    def env(self, token: str | None) -> dict[str, str]:
        """The environment of the process a worker starts with: this server's (with its PFS_TLS_* files, which
        workers use as clients do), its TLS CA if it serves TLS and names none, the bound on a command's processes,
        and the worker's TOKEN as PFS_TOKEN (in the environment, never on a command line that `ps` shows)."""
        env = {k: v for k, v in os.environ.items() if k not in ("PFS_TOKEN", "PFS_TOKEN_FILE")}
        env["PFS_MAX_PROCESSES"] = str(self.max_processes)
        if self.tls_ca and not env.get("PFS_TLS_CA"):
            env["PFS_TLS_CA"] = self.tls_ca
        return env if token is None else {**env, "PFS_TOKEN": token}

    def capacity(self) -> int:
        """This machine's cores (workers of both runners run here)."""
        return os.cpu_count() or 1

    def room(self) -> int:
        """Workers beyond WORKERS_PER_CORE a core wait for others to end: a parallelism of 1024 on a small machine
        would start 2,048 processes at once (a worker and its mount), gigabytes of memory."""
        with self._lock:
            return max(0, WORKERS_PER_CORE * self.capacity() - len(self._workers))

    def launch(self, job: JobInfo, shard: int, attempt: int, address: str, token: str | None) -> None:
        self._spawn(f"{job.id}-{shard}-{attempt}",
                    lambda workspace: self.command(job, shard, attempt, workspace, address, token), token,
                    subprocess.DEVNULL, lambda proc, workspace, stderr: self._workers.append(
                        _Worker(proc, job.id, shard, attempt, workspace, stderr)))

    def _spawn(self, name: str, command: Callable[[Path], list[str]], token: str | None, stdin: int,
               keep: Callable[[subprocess.Popen, Path, BinaryIO], None]) -> None:
        """Starts COMMAND (given its workspace: a directory NAME of its own, its stderr kept beside it) with
        TOKEN and STDIN, and has KEEP record it, under the lock; Unavailable once the runner is closed."""
        workspace = self.workspaces / name
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            stderr = open(workspace.with_name(workspace.name + ".stderr"), "w+b")
        except OSError:
            shutil.rmtree(workspace, ignore_errors=True)
            raise
        try:
            with self._lock:
                if self._closed:
                    raise Unavailable("the server is stopping")
                # a process group of its own: what the command left running ends with the worker
                proc = subprocess.Popen(command(workspace), stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr,
                                        start_new_session=True, env=self.env(token))
                keep(proc, workspace, stderr)
        except BaseException:
            _clean(workspace, stderr)
            raise

    def running(self, job_id: str) -> dict[int, int]:
        with self._lock:
            return {w.shard: w.attempt for w in self._workers if w.job == job_id}

    def jobs(self) -> set[str]:
        with self._lock:
            return {w.job for w in self._workers}

    def poll(self) -> list[Ended]:
        """The workers that ended since the last poll, each told once (its workspace removed); a cancelled worker
        still there STOP_TIMEOUT after is killed."""
        ended, now = [], time.monotonic()
        with self._lock:
            for w in list(self._workers):
                code = w.proc.poll()
                if code is None:
                    if now >= w.kill_at:
                        w.proc.kill()
                    continue
                self._workers.remove(w)
                _kill_group(w.proc)
                ended.append(Ended(w.job, w.shard, w.attempt, code, _tail(w.stderr)))
                _clean(w.workspace, w.stderr)
        return ended

    def cancel(self, job_id: str) -> None:
        """Asks the workers of job JOB_ID to stop (SIGTERM); poll() kills those still there STOP_TIMEOUT later."""
        with self._lock:
            for w in self._workers:
                if w.job == job_id and w.kill_at == math.inf:
                    w.proc.send_signal(signal.SIGTERM)
                    w.kill_at = time.monotonic() + STOP_TIMEOUT

    def close(self) -> None:
        """Stops every worker (SIGTERM, then SIGKILL for those still there after STOP_TIMEOUT) and waits for them;
        no worker starts after it."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for w in workers:
            w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            _kill_group(w.proc)
            _clean(w.workspace, w.stderr)


def require_image(image: str, runner: str) -> None:
    """Refuses a pipeline without an image (or with one that is not an image's name) on RUNNER, which runs its
    workers in it."""
    if not image:
        raise InvalidArgument(f"manifest field transform.image: missing; the {runner} runner runs workers in the "
                              "pipeline's image (one with job-shim, e.g. FROM pfs/job-shim)")
    image_ref.parse(image)


def _tail(stderr: BinaryIO) -> str:
    """The last ERROR_TAIL bytes a worker wrote to STDERR."""
    stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - ERROR_TAIL))
    return stderr.read().decode(errors="replace").strip()


def _clean(workspace: Path, stderr: BinaryIO) -> None:
    stderr.close()
    Path(stderr.name).unlink(missing_ok=True)
    shutil.rmtree(workspace, ignore_errors=True)


def _stop_spare(spare: _Spare) -> None:
    """Ends a spare worker that was never given a shard (it holds nothing worth a graceful stop)."""
    spare.proc.stdin.close()
    _kill_group(spare.proc)
    spare.proc.wait()
    _clean(spare.workspace, spare.stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kills what is left of the worker PROC started: its process group (the command's children, say)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left
        pass


# Of the server's environment, what a local worker, and its command, is given (LocalRunner.env): the shim's own
# (PFS_*, its token and TLS files; it gives the command none of PFS_TOKEN*), and the usual variables of a session
WORKER_ENV = re.compile(r"PFS_[A-Z0-9_]+|PATH|HOME|USER|LOGNAME|SHELL|TERM|TMPDIR|TZ|LANG|LANGUAGE|LC_[A-Z_]+")


class LocalRunner(ProcessRunner):
    """Workers as job-shim processes. Once it has run a job, it keeps spare workers started (Python loaded, their
    mount namespaces made, their mount processes loaded), as many as that job's workers up to a worker per core,
    which the next shards take: a job then waits for no process to start (about half a second of CPU each on
    these machines). They start while a core is free of workers (else once a worker ends), a server run by root
    starts them at SCHED_IDLE (pfs.core.priority) and raises each as it gives it a shard, so they do not slow the
    workers running meanwhile: a job with a worker on every core has every cycle."""

    name = "local"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        shim = Path(sys.executable).with_name("job-shim")
        self.shim = str(shim) if shim.exists() else shutil.which("job-shim")
        self._spares: list[_Spare] = []
        self._wanted = 0  # spares kept: the most workers of one job so far, up to capacity()
        self._spare_address = ""  # where spares report: the address the last workers were given

    def env(self, token: str | None) -> dict[str, str]:
        """A worker's, which its command's is made of: only what makes a process run as others on this machine do
        (WORKER_ENV) of this server's environment, and none of its secrets (AWS_SECRET_ACCESS_KEY, PGPASSWORD),
        which a user's command must not read. (A container's command has its image's environment.)"""
        return {k: v for k, v in super().env(token).items() if WORKER_ENV.fullmatch(k)}

    def launch(self, job: JobInfo, shard: int, attempt: int, address: str, token: str | None) -> None:
        with self._lock:
            self._wanted = max(self._wanted, min(len(job.shards), self.capacity()))
            spare = self._spares.pop(0) if self._spares else None
        if spare is None or spare.address != address or spare.proc.poll() is not None:
            if spare is not None:
                _stop_spare(spare)
            super().launch(job, shard, attempt, address, token)
        else:
            given = json.dumps({"job": job.id, "shard": shard, "attempt": attempt, "token": token})
            priority.restore([spare.proc.pid])  # so that it reads its shard at once, however busy the cores are
            try:
                with spare.proc.stdin as pipe:
                    pipe.write(f"{given}\n".encode())
            except BrokenPipeError:  # it ended just now: poll() tells how, and the shard is tried again
                pass
            with self._lock:
                closed = self._closed
                if not closed:
                    self._workers.append(_Worker(spare.proc, job.id, shard, attempt, spare.workspace, spare.stderr))
            if closed:  # closed while it was given the shard, after close() took the workers: it ends as they did
                _stop_spare(spare)
                raise Unavailable("the server is stopping")
        self._spare_address = address
        if len(job.shards) < self.capacity():  # else its other shards are on their way to the other cores
            self._top_up()

    def poll(self) -> list[Ended]:
        ended = super().poll()
        if ended:
            self._top_up()
        return ended

    def _top_up(self) -> None:
        """Starts spare workers until there are as many as wanted, or no core is free of workers."""
        while self._start_spare():
            pass

    def _start_spare(self) -> bool:
        """Starts a spare worker if fewer than wanted are there and a core is free; whether it did."""
        with self._lock:
            if self._closed or len(self._spares) >= self._wanted or len(self._workers) >= self.capacity():
                return False
        address = self._spare_address
        # as a worker, but without its token: it comes with the shard
        low = priority.idle() if os.geteuid() == 0 else []  # only root raises it again
        try:
            self._spawn(f"spare-{uuid.uuid4().hex}",
                        lambda workspace: [*tools.die_with_parent("KILL"), *low, self.shim, "--address", address,
                                           "--standby", "--workspace", str(workspace)], None, subprocess.PIPE,
                        lambda proc, workspace, stderr: self._spares.append(_Spare(proc, address, workspace, stderr)))
        except Unavailable:  # closed meanwhile
            return False
        return True

    def close(self) -> None:
        super().close()  # first: no spare starts after it, so none is left out of those stopped here
        with self._lock:
            spares, self._spares = self._spares, []
        for spare in spares:
            _stop_spare(spare)

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

    def unconfined(self) -> str | None:
        if os.geteuid() == 0:
            return None
        return (f"its workers run commands as the server's own user (uid {os.geteuid()}), who may read its data "
                "dir; start the server as root, or with --runner container")

    def command(self, job: JobInfo, shard: int, attempt: int, workspace: Path, address: str,
                token: str | None) -> list[str]:
        # the worker dies with the server (setpriv --pdeathsig): a restarted server runs the shard again
        return [*tools.die_with_parent("KILL"), self.shim, "--address", address, "--job", job.id,
                "--shard", str(shard), "--attempt", str(attempt), "--workspace", str(workspace)]


class ContainerRunner(ProcessRunner):
    name = "container"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.engine = tools.container_engine()
        self._answered = False  # the engine answered once (tools.engine_unanswered)

    def check_tools(self) -> None:
        if self.engine is None:
            raise FailedPrecondition(f"the container runner needs podman or docker: {tools.INSTALL['engine']}")
        if not self._answered:  # once it has, a daemon gone later fails the workers, each saying so
            unanswered = tools.engine_unanswered(self.engine)
            if unanswered:
                raise FailedPrecondition(f"the container runner cannot run containers: {unanswered}")
            self._answered = True

    def check(self, image: str) -> None:
        super().check(image)
        require_image(image, self.name)

    def command(self, job: JobInfo, shard: int, attempt: int, workspace: Path, address: str,
                token: str | None) -> list[str]:
        image = job.transform.image
        registry = image_ref.parse(image)[0]
        # a registry on loopback (where --push-images put the image, say) speaks plain HTTP
        podman = Path(self.engine or "").name == "podman"
        tls = ["--tls-verify=false"] if podman and registry and image_ref.is_loopback(registry) else []
        # by name: the values are in the engine's env
        given = ["-e", "PFS_MAX_PROCESSES", *([] if token is None else ["-e", "PFS_TOKEN"])]
        env = self.env(token)
        files = [arg for name in TLS_ENV if env.get(name)  # the worker's TLS files, where the worker looks for them
                 for arg in ("-e", name, "-v", f"{env[name]}:{env[name]}:ro")]
        return [self.engine, "run", "--rm", *tls, *given, *files, "--device", "/dev/fuse", "--cap-add", "SYS_ADMIN",
                "--network", "host", "--name", f"pfs-{workspace.name}", image,
                "job-shim", "--address", address, "--job", job.id, "--shard", str(shard), "--attempt", str(attempt)]


RUNNERS = {"local": LocalRunner, "container": ContainerRunner}

"""`job-shim`: a worker. Takes one shard of a job, mounts its inputs, runs the command, uploads /pfs/out.

    job-shim --address HOST:PORT --job ID --shard I [--attempt N] [--root /pfs] [--wait SECONDS]

(or PFS_ADDRESS, PFS_JOB, PFS_SHARD; on Kubernetes JOB_COMPLETION_INDEX). The server's token comes in
PFS_TOKEN (or PFS_TOKEN_FILE), never on the command line; the mount is given it, the command does not get it.
A spare worker (--standby, the local runner's) starts up first, mount and all, and is then given its job,
shard, try and token on standard input.
The shim first gets a mount namespace of its own (not run by root, in a user namespace too: the command runs as
the shim's user), in which, with --workspace DIR, DIR is /pfs, so workers on one machine each see their own /pfs.
A shim run by root runs the command as the job's transform.user where it names one (pfs/core/run_as.py; the
server sets it to a user other than root for every pipeline not made by the cluster's root).
A worker that cannot reach its server waits for it (up to --wait seconds, trying again with a growing pause, saying
why on stderr) before it claims its try: one started while its server restarts, or before a Service routes to
it, would otherwise fail a try the controller counts, and burn the shard's tries for nothing.
Exit status: 0 the shard succeeded and its output is staged; 1 the command
failed (reported with its exit code and last stderr lines, nothing
uploaded); 2 the shim could not do its part (reported when the server can
be reached); a runner retries 2, and may retry 1.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from pfs.client import Client, default_address
from pfs.client.auth import find_token
from pfs.core import durations, priority, run_as
from pfs.core.errors import FailedPrecondition, InvalidArgument, PfsError, Unavailable
from pfs.core.memory import keep_freed_memory
from pfs.core.model import CommitRef, JobInfo, ShardInfo
from pfs.core.mount_inputs import MountInput
from pfs.core.shard import worker_shards
from shim import command, namespace, oom
from shim.logs import Logs
from shim.mounts import Mounts
from shim.output import Output

OK, COMMAND_FAILED, SHIM_FAILED = 0, 1, 2
STANDBY_FIELDS = ("job", "shard", "attempt", "token")
OWN_TMP = ".tmp"  # in /pfs: the /tmp of the command (no repo has the name)
TOKEN_VARS = ("PFS_TOKEN", "PFS_TOKEN_FILE")  # the shim's and its mounts', not the command's: it needs none,
# and what it prints or writes is kept in logs and commits
SERVER_WAIT = 60.0  # seconds a worker waits for a server it cannot reach: a restart, a Service not routed yet
FIRST_PAUSE, MAX_PAUSE = 0.5, 8.0  # seconds between two looks for it, doubling


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="job-shim", description="Run one shard of a pfs job: the worker side.")
    p.add_argument("--address", default=env("PFS_ADDRESS"), help="the pfs server, host:port ($PFS_ADDRESS)")
    p.add_argument("--job", default=env("PFS_JOB"), help="the job id ($PFS_JOB)")
    p.add_argument("--shard", type=int, default=env("PFS_SHARD") or env("JOB_COMPLETION_INDEX"),
                   help="this worker's shard ($PFS_SHARD or $JOB_COMPLETION_INDEX)")
    p.add_argument("--attempt", type=int, default=env("PFS_ATTEMPT") or 0,
                   help="the try of the shard a controller started this worker for ($PFS_ATTEMPT; default: a "
                        "new try)")
    p.add_argument("--root", type=Path, default=Path(env("PFS_ROOT") or "/pfs"),
                   help="where inputs and out go (default /pfs, or $PFS_ROOT)")
    p.add_argument("--workspace", type=Path, default=env("PFS_WORKSPACE"),
                   help="see this local directory at --root, in the worker's own mount namespace (how several "
                        "workers share a machine)")
    p.add_argument("--standby", action="store_true",
                   help="a spare worker: start up, then wait for its shard as one line of JSON on standard input "
                        f"({', '.join(STANDBY_FIELDS)}; the token in place of PFS_TOKEN)")
    p.add_argument("--max-processes", type=int, default=env("PFS_MAX_PROCESSES") or run_as.MAX_PROCESSES,
                   metavar="N", help="the processes and threads a command run as another user may have at once, "
                   "with the rest of its uid's on this machine (default "
                   f"{run_as.MAX_PROCESSES}, or $PFS_MAX_PROCESSES)")
    p.add_argument("--wait", type=float, default=env("PFS_SERVER_WAIT") or SERVER_WAIT,
                   help="seconds to wait for a server that cannot be reached before giving up the try (default "
                        f"{SERVER_WAIT:g}, or $PFS_SERVER_WAIT; 0: give up at once)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    for name in ("job", "shard"):
        if getattr(args, name) is None and not args.standby:
            _fail(f"no {name} given: use --{name} or ${'PFS_' + name.upper()}")
    if args.max_processes < 1:
        _fail(f"--max-processes must be at least 1, not {args.max_processes}")
    is_root = os.getuid() == 0  # before a user namespace, whose root is not
    try:
        namespace.enter(args.workspace.resolve() if args.workspace else None, args.root)
    except PfsError as err:
        _fail(str(err))
    keep_freed_memory()
    signal.signal(signal.SIGTERM, _stop)
    address = args.address or default_address()
    client = None
    try:
        # started while the shard is waited for and asked for; waited for after the report: the result does not
        # need it
        with Mounts(address, str(args.root), allow_other=is_root) as mounts:
            if args.standby:
                job, shard, attempt, token = _assignment(sys.stdin.readline())
                priority.restore([os.getpid(), mounts.pid])  # its mount (the runner raised this process already)
            else:  # from PFS_TOKEN (a file it names cannot be read: one line)
                job, shard, attempt, token = args.job, args.shard, args.attempt, find_token()
            client = Client(address, token)
            reach(client, args.wait)  # the mount asks the server nothing before it is given its inputs
            worker = Worker(client, job, shard, args.root, is_root, args.max_processes)
            sys.exit(worker.run(attempt, mounts, token))
    except PfsError as err:
        _fail(str(err))
    finally:
        if client is not None:
            client.close()


def reach(client: Client, wait: float) -> None:
    """Returns once CLIENT's server answers (whatever it answers: a refusal is start_shard's to report); Unavailable
    if none did within WAIT seconds. Each miss is said on stderr (the pod's log), with when the next look comes."""
    deadline, pause = time.monotonic() + wait, FIRST_PAUSE
    while True:
        try:
            client.whoami()
            return
        except Unavailable as err:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"{err}; waited {wait:g} s for it" if wait else str(err)) from None
            pause = min(pause, left)
            print(f"job-shim: {err}; looking again in {pause:.1f} s", file=sys.stderr, flush=True)
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
        except PfsError:  # it answered
            return


def _assignment(line: str) -> tuple[str, int, int, str | None]:
    """The job, shard, try and token a spare worker is given: STANDBY_FIELDS as one line of JSON."""
    try:
        given = json.loads(line)
        job, shard, attempt, token = (given[k] for k in STANDBY_FIELDS)
        if not (isinstance(job, str) and type(shard) is int and type(attempt) is int
                and isinstance(token, (str, type(None)))):
            raise ValueError(f"a field of the wrong type in {sorted(given)}")
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidArgument(f"a spare worker needs its shard as one line of JSON with "
                              f"{', '.join(STANDBY_FIELDS)}: {type(err).__name__}: {err}") from None
    return job, shard, attempt, token


def _fail(message: str) -> NoReturn:
    print(f"job-shim: {message}", file=sys.stderr)
    sys.exit(SHIM_FAILED)


class Worker:
    def __init__(self, client: Client, job_id: str, shard: int, root: Path, is_root: bool,
                 max_processes: int) -> None:
        self.client = client
        self.job_id = job_id
        self.shard = shard
        self.root = root
        self.is_root = is_root  # this worker may run the command as another user
        self.max_processes = max_processes  # of the uid of a command run as another user

    def run(self, attempt: int, mounts: Mounts, token: str | None) -> int:
        """Takes try ATTEMPT at the shard (0: a new one), runs it with its inputs on MOUNTS (which read them with
        TOKEN) and reports; the exit status."""
        job = self.client.start_shard(self.job_id, self.shard, attempt)
        attempt = job.shards[self.shard].attempts
        logs = Logs(self.client, self.job_id, self.shard)
        try:
            code, result = self._attempt(job, attempt, logs, mounts, token)
        except (PfsError, OSError) as err:
            message = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and err.strerror else str(err)
            logs.line("shim", f"job-shim: {message}")
            code, result = SHIM_FAILED, ShardInfo(self.shard, exit_code=-1, error=f"job-shim: {message}")
        finally:
            logs.close()
        self.client.finish_shard(self.job_id, attempt, result)
        return code

    def _user(self, user: str) -> tuple[int, int] | None:
        """The uid and gid the command runs as, for the transform's USER ('': None, this worker's own)."""
        if not user:
            return None
        if not self.is_root:
            raise FailedPrecondition(f"cannot run the command as user {user}: this worker is not root")
        return run_as.resolve(user)

    def _attempt(self, job: JobInfo, attempt: int, logs: Logs, mounts: Mounts,
                 token: str | None) -> tuple[int, ShardInfo]:
        user = self._user(job.transform.user)
        out = self.root / "out"
        _empty_dir(out)
        if user is not None:  # its command writes there; what it wrote is read as it may (run_as.files_as)
            os.chown(out, *user)
            run_as.drop_groups()
        with self._own_tmp(user) as tmp:
            return self._run(job, attempt, logs, mounts, token, user, out, tmp)

    @contextlib.contextmanager
    def _own_tmp(self, user: tuple[int, int] | None) -> Iterator[Path]:
        """The directory that is the command's /tmp and /var/tmp (shim/pidns.py) while the try lasts, emptied after,
        USER's where the command runs as another user: as a container's, whoever runs it, so that the workers of
        a job (or of several) never share a scratch file (`sort > /tmp/part; mv /tmp/part /pfs/out/`)."""
        tmp = self.root / OWN_TMP
        _empty_dir(tmp)
        if user is not None:
            os.chown(tmp, *user)
        tmp.chmod(0o700)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run(self, job: JobInfo, attempt: int, logs: Logs, mounts: Mounts, token: str | None,
             user: tuple[int, int] | None, out: Path, tmp: Path) -> tuple[int, ShardInfo]:
        shards = worker_shards([i.method for i in job.inputs], [i.shards for i in job.inputs], self.shard)
        env = {**{k: v for k, v in os.environ.items() if k not in TOKEN_VARS}, **dict(job.transform.env),
               "PFS_JOB": job.id, "PACH_JOB_ID": job.id, "PFS_SHARD": str(self.shard)}
        inputs = {}
        for i, shard in zip(job.inputs, shards):
            inputs[str(self.root / i.repo)] = MountInput(i.repo, CommitRef(i.repo, i.commit), shard, *(
                (i.since, i.incremental) if i.since else ()))  # an input seen whole has an incremental of none
            var = re.sub(r"[^A-Z0-9]", "_", i.repo.upper())
            env[f"PACH_{var}_COMMIT_ID"] = env[f"PFS_{var}_COMMIT_ID"] = i.commit
        if job.prev_output:
            inputs[str(self.root / "prev")] = MountInput("prev", CommitRef(job.output_repo, job.prev_output))
        mounts.mount(inputs, token)
        mounted = time.time()
        logs.line("shim", f"job {job.id} shard {self.shard} of {len(job.shards)}, try {attempt}: "
                          f"running {' '.join(job.transform.cmd)}")
        results = Output(self.client, job.id, self.shard, attempt, out, logs, user,
                         {Path(t): i.commit for t, i in inputs.items()})
        results.start()  # read and sent while the command writes them
        memory = oom.Watch()
        try:
            code, tail, timed_out = command.run(job.transform.cmd, job.transform.stdin, env, logs, user, tmp,
                                                self.max_processes, job.datum_timeout)
        except BaseException:
            results.abandon()
            raise
        bytes_in = sum(_size(self.root / i.repo) for i in job.inputs)
        if timed_out or not job.transform.accepts(code):
            mounts.stop()
            results.abandon()
            error = f"{job.transform.cmd[0]} " + (
                f"ran longer than the datum_timeout ({durations.text(job.datum_timeout)}) and was killed"
                if timed_out else f"exited with code {code}" if code >= 0 else
                f"was killed by {signal.Signals(-code).name} (code {code})")
            error += f" {oom.SAID}" if memory.struck() else ""
            error += ": " + "\n".join(tail) if tail else ""
            logs.line("shim", f"job-shim: {error.splitlines()[0]}; its output is not kept")
            return COMMAND_FAILED, ShardInfo(self.shard, exit_code=code, error=error, bytes_in=bytes_in,
                                             mounted=mounted)
        bytes_out, bytes_sent = results.finish()  # links to the inputs' files are read through the mounts
        mounts.stop()  # they unmount while the result is reported
        return OK, ShardInfo(self.shard, exit_code=code, bytes_in=bytes_in, bytes_out=bytes_out,
                             bytes_sent=bytes_sent, mounted=mounted, uploaded=time.time())


def _stop(signum, frame) -> None:
    """SIGTERM (a runner stopping its workers): the command is killed and the mounts unmounted on the way out."""
    raise SystemExit(128 + signum)


def _empty_dir(path: Path) -> None:
    """PATH as an empty local directory (what an earlier attempt left there is removed)."""
    if path.is_mount():
        raise InvalidArgument(f"{path} is a mount point; /pfs/out must be a plain local directory")
    if path.is_symlink() or path.is_file():  # an earlier try's command replaced it
        path.unlink()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _size(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)

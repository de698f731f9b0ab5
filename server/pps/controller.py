"""The pipeline controller: every new finished commit of a pipeline's inputs becomes a job, run by the runner.

A reconciler over the metadata store: one loop per server, which acts only on the pipelines whose leases it holds
(server/pps/leases.py) and only through the store, so any server of a cluster can take a pipeline over. Each
turn it collects the workers of this server that ended without reporting (a failed try), cancels those of jobs
that ended, and for each pipeline it holds: makes the job for the oldest input commit not yet processed, or
advances the one running. Its jobs run one after another (an incremental job builds on the previous output),
each job's workers in parallel up to the pipeline's parallelism, a failed shard tried again up to its datum_tries
times; a job that outlives its job_timeout is stopped (a worker kills a command that outlives the datum_timeout).
A try whose worker ran under a server that is gone (its beat expired), or under this server before it restarted,
is lost and counts as failed; one running under another live server is left to it. The loop wakes on news (a
worker reported, a commit finished: on any server) and every IDLE_WAIT seconds.
"""

import dataclasses
import heapq
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

from pfs.core import durations, names
from pfs.core.errors import FailedPrecondition, NotFound, PfsError, Unavailable
from pfs.core.model import (
    DATUM_TRIES, MAX_LOG_TEXT, CommitInfo, CommitRef, InputSpec, JobInfo, JobState, LogLine, PipelineInfo,
    PipelineState, ShardInfo, ShardState,
)
from server.meta import Tx
from server.pps.job_tokens import JobTokens
from server.pps.jobs import Jobs
from server.pps.leases import LeaseLost, Leases
from server.pps.runners import Ended, Runner
from server.store import Store

log = logging.getLogger(__name__)

IDLE_WAIT = 1.0  # seconds between turns when nothing wakes the controller
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0  # seconds before trying a failed pipeline again: doubling, capped
JOIN_TIMEOUT = 2.0  # seconds close() waits for the loop once the workers are stopped
STOPPED = "stopped by stop-pipeline"
DELETED = "its pipeline was deleted"
STOPPED_JOB = "stopped by stop-job"


@dataclass
class _Wants:
    """A pipeline's job with shards to start: its creator's ('' the root), and those shards, in order, as many as
    its parallelism allows now."""

    name: str
    creator: str
    job: JobInfo
    todo: list[int]
    started: int = 0


@dataclass
class _Failing:
    """A pipeline whose last turns failed: how many in a row, what was said, when to try again."""

    failures: int = 0
    said: str = ""
    retry_at: float = 0.0


class Controller:
    def __init__(self, store: Store, jobs: Jobs, runner: Runner, leases: Leases,
                 job_tokens: JobTokens | None = None) -> None:
        self.store = store
        self.jobs = jobs
        self.runner = runner
        self.leases = leases
        self.job_tokens = job_tokens  # what workers show the cluster (None: a server that asks for no token)
        self._failing: dict[str, _Failing] = {}
        self._owners: dict[str, tuple[str, str]] = {}  # the pipeline and creator of each job with workers here
        self._said = ""  # what the loop itself last logged failing
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="controller", daemon=True)

    def start(self) -> None:
        """Starts the loop (after a restart: it resumes the jobs of the pipelines it gets)."""
        self._thread.start()

    def watch(self) -> None:
        """A pipeline was made: the next turn takes its lease if it is this server's to take, without waiting for
        the next renewal."""
        self.leases.take()

    def close(self) -> None:
        """Stops the loop and every worker of this server, within the runner's STOP_TIMEOUT and a little, and gives
        its leases up."""
        self._stopping.set()
        self.store.notify_finished()
        self.runner.close()
        self._thread.join(JOIN_TIMEOUT)
        try:
            self.leases.release()
        except PfsError as err:  # the others take its pipelines once the leases expire
            log.warning("cannot give the pipelines' leases up: %s", err)

    def stop_jobs(self, name: str, why: str) -> None:
        """Ends pipeline NAME's running jobs as failures (WHY) and stops their workers (see stop_job)."""
        for job in self.jobs.list_jobs(name):
            if not job.is_done:
                self.stop_job(job.id, why)

    def stop_job(self, job_id: str, why: str) -> JobInfo:
        """Ends a running job as a failure (WHY) and stops its workers here; other servers stop theirs at their next
        turn. Its pipeline goes on to the commits after it."""
        job = self.jobs.stop_job(job_id, why)
        self.runner.cancel(job_id)
        return job

    # -- the loop

    def _loop(self) -> None:
        while not self._stopping.is_set():
            busy = False
            try:
                busy = self._turn()
                self._said = ""
            except Exception as err:  # noqa: BLE001 - nothing may end the loop; the store failing, say
                reason = _describe(err)
                if reason != self._said:
                    log.warning("pipeline controller: %s; trying again", reason,
                                exc_info=not isinstance(err, (PfsError, OSError)))
                    self._said = reason
            if not busy:
                try:
                    self.store.wait_finished(IDLE_WAIT)
                except Unavailable:  # the server is stopping
                    return

    def _turn(self) -> bool:
        """One turn over this server's workers and its pipelines; whether it did something that calls for another
        turn at once."""
        self.leases.renew()
        self._collect()
        busy = False
        held = self.leases.held()
        self._failing = {n: f for n, f in self._failing.items() if n in held}  # a pipeline gone, or another's now
        stepped, wanted = [], []
        for name in held:
            failing = self._failing.get(name)
            if self._stopping.is_set() or (failing and time.monotonic() < failing.retry_at):
                continue
            try:
                lost, wants = self._step(name)
            except Exception as err:  # noqa: BLE001 - recorded on the pipeline, tried again later
                self._failed_turn(name, err)
                continue
            busy |= lost
            stepped.append(name)
            if wants is not None:
                wanted.append(wants)
        failed = self._start_fairly(wanted)
        for name in stepped:
            if name not in failed:
                self._recovered(name)
        return busy or any(w.started for w in wanted)

    def _failed_turn(self, name: str, err: Exception) -> None:
        if isinstance(err, LeaseLost):
            self.leases.lost(name)
        elif not self._stopping.is_set():  # not what a stopping server's runner refused
            self._failed(name, err)

    def _collect(self) -> None:
        """Reports this server's workers that ended without reporting, stops those whose job ended, and revokes the
        tokens of ended jobs."""
        for e in self.runner.poll():
            lines = e.tail.splitlines()
            how = f"its worker {e.reason or f'exited with status {e.code}'} without reporting"
            if self._report(e.job, e.shard, e.attempt, f"{how}: {lines[-1]}" if lines else how) and lines:
                self._keep_tail(e, how, lines)
        for job_id in self.runner.jobs():
            try:
                done = self.jobs.inspect_job(job_id).is_done
            except NotFound:
                done = True
            if done:
                self.runner.cancel(job_id)
        for job_id in self.job_tokens.held() if self.job_tokens else ():
            job = self.jobs.inspect_job(job_id)
            if job.is_done:
                self.job_tokens.ended(job)

    def _keep_tail(self, e: Ended, how: str, lines: list[str]) -> None:
        """Adds the last LINES a worker that died before reporting printed (HOW it ended) to its job's logs, so that
        get-logs shows them: it sent none of what it could not report."""
        now = time.time()
        try:
            self.jobs.add_logs([LogLine(e.job, e.shard, now, "shim", f"job-shim: {how}; the last lines it printed:"),
                                *(LogLine(e.job, e.shard, now, "shim", line[:MAX_LOG_TEXT]) for line in lines)])
        except PfsError as err:  # its job is gone: nobody will ask
            log.debug("job %s shard %d: %s", e.job, e.shard, err)

    def _failed(self, name: str, err: Exception) -> None:
        """Logs ERR (once while it repeats), records it on the pipeline and waits longer each time to try again."""
        failing = self._failing.setdefault(name, _Failing())
        failing.failures += 1
        reason = _describe(err)
        if reason != failing.said:
            log.warning("pipeline %s: %s; trying again", name, reason,
                        exc_info=not isinstance(err, (PfsError, OSError)))
            failing.said = reason
        failing.retry_at = time.monotonic() + min(BACKOFF_FIRST * 2 ** (failing.failures - 1), BACKOFF_MAX)
        self._record(name, reason, failing.failures)

    def _recovered(self, name: str) -> None:
        failing = self._failing.pop(name, None)
        if failing is not None:
            log.info("pipeline %s: running again after %d failed tries", name, failing.failures)
            self._record(name, "", 0)

    # -- one pipeline

    def _step(self, name: str) -> tuple[bool, _Wants | None]:
        """Reports the lost tries of the pipeline's unfinished job, or makes its next one; whether it reported any,
        and the job's shards to start (None: none)."""
        with self.store.meta.transaction() as tx:
            pipeline = tx.get_pipeline(name)
        if pipeline is None or pipeline.state != PipelineState.RUNNING:
            return False, None
        if pipeline.failures and name not in self._failing:  # recorded by this server before a restart, or another
            self._failing[name] = _Failing(pipeline.failures, pipeline.reason)
        jobs = self.jobs.list_jobs(name)  # newest first
        job = next((j for j in jobs if not j.is_done), None) or self._next_job(pipeline, jobs)
        if job is None:
            return False, None
        lost, job = self._report_lost(job)
        if job.is_done:
            return lost, None
        if job.timeout and time.time() - job.started > job.timeout:
            self.stop_job(job.id, f"stopped: it ran longer than its job_timeout ({durations.text(job.timeout)})")
            return True, None  # the next job is made at once
        running = sum(s.state == ShardState.RUNNING for s in job.shards)
        todo = [s.index for s in job.shards
                if s.state in (ShardState.PENDING, ShardState.FAILURE) and s.attempts < job.max_attempts]
        todo = todo[: max(0, job.parallelism - running)]
        return lost, (_Wants(name, pipeline.creator, job, todo) if todo else None)

    def _record(self, name: str, reason: str, failures: int) -> None:
        """Records on the pipeline why its last try failed (REASON; '' once one went well)."""
        try:
            with self.store.meta.transaction() as tx:
                current = tx.get_pipeline(name)
                if current is None or (current.reason, current.failures) == (reason, failures):
                    return
                tx.put_pipeline(dataclasses.replace(current, reason=reason, failures=failures))
        except Exception as err:  # noqa: BLE001 - the store itself failing: the log has it
            log.warning("pipeline %s: cannot record its failure: %s", name, _describe(err))
            return
        self.store.notify_finished()  # a flush-commit waiting for the pipeline looks again

    def _next_job(self, pipeline: PipelineInfo, jobs: list[JobInfo]) -> JobInfo | None:
        """The job for the commit, of any input, that finished first of those no job has seen, or None. It sees
        that commit and every other input as the job before saw it, so that each commit of each input is new to
        exactly one job, as in 1.x (an input no job saw yet shows its first commit). An input whose processed
        commit is no longer on its branch (the branch set back, the commit or the repo deleted) goes on after the
        newest commit of it a job saw, or from its head again where that is the head. JOBS: the pipeline's jobs so
        far, newest first."""
        processed = dict(pipeline.processed)
        jobs = [j for j in jobs if pipeline.made(j)]
        seen: dict[str, str] = {}  # what the job sees of each input
        ancestry: dict[str, list[str]] = {}  # each input's finished commits, oldest first
        pending: list[tuple[float, int, str]] = []  # (when it finished, the input's place, commit) of each input
        for place, i in enumerate(pipeline.spec.inputs):
            finished = self._finished_commits(i.repo, i.ref)
            if not finished:
                return None  # every input needs a commit
            ancestry[i.repo] = ids = [c.id for c in finished]
            done = processed.get(i.repo)
            if pipeline.reprocess:
                newer = finished[-1:]
            elif done in ids:
                newer = finished[ids.index(done) + 1:]
                seen[i.repo] = done
            else:  # none processed yet, or not on its branch any more: after the newest one a job saw, else all
                saw = {j.commit for job in jobs for j in job.inputs if j.repo == i.repo}
                last = max((n for n, c in enumerate(ids) if c in saw), default=None)
                newer = finished if last is None else finished[last + 1:] or finished[-1:]  # or its head again
            if newer:
                pending.append((newer[0].finished, place, newer[0].id))
                seen.setdefault(i.repo, newer[0].id)  # an input not seen yet comes in with the commit that triggers
        if not pending:
            return None
        if self.job_tokens:  # it runs as its creator
            self.job_tokens.check_creator(pipeline)
        _, place, commit = min(pending)
        spec = pipeline.spec.inputs[place]
        seen[spec.repo] = commit
        since = self._since(pipeline, jobs, spec, seen, ancestry[spec.repo])
        skipped = bool(since) and not spec.run_empty and self.store.adds_nothing(
            CommitRef(spec.repo, commit), CommitRef(spec.repo, since))
        inputs = [(dataclasses.replace(i, ref=seen[i.repo]), since if i.repo == spec.repo else "")
                  for i in pipeline.spec.inputs]
        fence = self.leases.fence(pipeline.name)

        def processing(tx: Tx) -> None:
            """The job is made by the lease's holder, for a pipeline still as it was, with its inputs marked
            processed in the same transaction."""
            fence(tx)
            current = tx.get_pipeline(pipeline.name)
            if current is None or (current.version, current.state, current.processed) != (
                    pipeline.version, PipelineState.RUNNING, pipeline.processed):
                raise FailedPrecondition(f"pipeline {pipeline.name} changed while its next job was made")
            tx.put_pipeline(dataclasses.replace(current, processed=tuple(sorted(seen.items())), reprocess=False))

        job = self.jobs.make_job(names.new_commit_id(), pipeline.spec.transform, inputs,
                                 pipeline.spec.parallelism.resolve(self.runner.capacity()), pipeline.name,
                                 pipeline.name, pipeline.spec.datum_tries or DATUM_TRIES, fresh_output=not since,
                                 skipped=skipped, first=processing, timeout=pipeline.spec.job_timeout,
                                 datum_timeout=pipeline.spec.datum_timeout)
        if skipped:
            log.info("pipeline %s: nothing new in %s@%s; job %s skipped", pipeline.name, spec.repo, commit, job.id)
        return None if skipped else job

    def _finished_commits(self, repo: str, branch: str) -> list[CommitInfo]:
        """The finished commits of REPO's BRANCH, oldest first (none while the branch is not made yet); NotFound
        if the repo is gone: a pipeline cannot go on without its input (its Reason, until the repo is back)."""
        try:
            commits = self.store.list_commits(repo, branch)
        except NotFound:
            try:
                self.store.inspect_repo(repo)
            except NotFound:
                raise NotFound(f"its input repo {repo!r} is not there (deleted?): make it again, or update or "
                               "delete the pipeline") from None
            return []
        return [c for c in reversed(commits) if c.is_finished]

    @staticmethod
    def _since(pipeline: PipelineInfo, jobs: list[JobInfo], spec: InputSpec, seen: dict[str, str],
               ancestry: list[str]) -> str:
        """The commit of input SPEC after which the job shows what changed (its output added to the one before):
        SPEC's commit in the pipeline's newest successful job, where that job saw every other input as this one
        will (SEEN) and that commit is an ancestor of this one's on its branch (ANCESTRY); else '', the input
        whole and the output afresh."""
        if pipeline.reprocess or spec.incremental == "none":
            return ""
        last = next((j for j in jobs if j.state == JobState.SUCCESS), None)
        if last is None:
            return ""
        saw = {i.repo: i.commit for i in last.inputs}
        if any(saw.get(repo) != commit for repo, commit in seen.items() if repo != spec.repo):
            return ""
        since = saw.get(spec.repo, "")
        return since if since in ancestry[: ancestry.index(seen[spec.repo])] else ""

    # -- one job

    def _report_lost(self, job: JobInfo) -> tuple[bool, JobInfo]:
        """Reports the job's lost tries; whether there were any, and the job as it is now."""
        here = self.runner.running(job.id)
        lost = False
        for s in job.shards:
            if s.state != ShardState.RUNNING:
                continue
            if s.server == self.leases.server and here.get(s.index) != s.attempts:
                lost |= self._report(job.id, s.index, s.attempts, "its worker was lost (the server stopped)")
            elif s.server != self.leases.server and s.server not in self.leases.servers:
                lost |= self._report(job.id, s.index, s.attempts, f"its worker was lost with server {s.server or '?'}")
        return lost, self.jobs.inspect_job(job.id) if lost else job

    def _start_fairly(self, wanted: list[_Wants]) -> set[str]:
        """Starts the shards WANTED, one at a time while the runner has room, each to the user with the fewest
        workers running here, and of theirs to the pipeline with the fewest: a user's long job, or many pipelines,
        take only the room others leave, and the others' shards start first as workers end. The names of the
        pipelines whose start failed (recorded on them)."""
        users: Counter[str] = Counter()  # workers running here, by user
        pipelines: Counter[str] = Counter()  # and by pipeline
        running = self.runner.jobs()
        self._owners = {j: owner for j, owner in self._owners.items() if j in running}
        for job_id, (pipeline, creator) in self._owners.items():
            workers = len(self.runner.running(job_id))
            users[creator] += workers
            pipelines[pipeline] += workers
        queue = [(users[w.creator], pipelines[w.name], n, w) for n, w in enumerate(wanted)]
        heapq.heapify(queue)
        failed = set()
        while queue and not self._stopping.is_set() and self.runner.room() > 0:
            _, _, n, wants = heapq.heappop(queue)
            try:
                self._start(wants)
            except Exception as err:  # noqa: BLE001 - recorded on the pipeline, tried again later
                self._failed_turn(wants.name, err)
                failed.add(wants.name)
                continue
            self._owners[wants.job.id] = (wants.name, wants.creator)
            users[wants.creator] += 1
            pipelines[wants.name] += 1
            if wants.todo:
                heapq.heappush(queue, (users[wants.creator], pipelines[wants.name], n, wants))
        return failed

    def _start(self, wants: _Wants) -> None:
        """Starts the worker of WANTS' next shard."""
        index = wants.todo.pop(0)
        job = wants.job = self.jobs.launch_shard(wants.job.id, index, self.leases.server,
                                                 self.leases.fence(wants.job.pipeline))
        wants.started += 1
        attempt = job.shards[index].attempts
        try:
            token = self.job_tokens.token(job) if self.job_tokens else None
            self.runner.launch(job, index, attempt, self.leases.addresses(), token)
        except Exception as err:
            if not self._stopping.is_set():
                self._report(job.id, index, attempt, f"its worker could not start: {_describe(err)}")
            raise

    def _report(self, job_id: str, shard: int, attempt: int, why: str) -> bool:
        """Records try ATTEMPT at SHARD as failed with WHY, unless it ended otherwise; whether it was."""
        try:
            self.jobs.finish_shard(job_id, shard, attempt, ShardInfo(shard, exit_code=-1, error=why))
            return True
        except PfsError as err:  # the job ended meanwhile, or its worker reported after all
            log.debug("job %s shard %d: %s", job_id, shard, err)
            return False


def _describe(err: Exception) -> str:
    """ERR in one line: a domain error's message, an OSError's file and reason, else its type and text."""
    if isinstance(err, PfsError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return f"{type(err).__name__}: {err}".splitlines()[0]

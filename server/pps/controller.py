"""The pipeline controller: every new finished commit of a pipeline's inputs becomes a job, run by the runner.

One thread per pipeline. Its jobs run one after another (an incremental job
builds on the previous output), each job's workers in parallel up to the
pipeline's parallelism, a failed shard tried again up to MAX_ATTEMPTS times.
All state is in the metadata store, so a restarted server picks up where it
was: a job left running is run again (its finished shards kept, the others
taken anew), and commits not yet processed get their jobs.
"""

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pfs.core import names
from pfs.core.errors import NotFound, PfsError
from pfs.core.model import CommitRef, InputSpec, JobInfo, JobState, PipelineInfo, PipelineState, ShardInfo, ShardState
from server.pps.jobs import Jobs
from server.pps.runners import Runner
from server.store import Store

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
IDLE_WAIT = 1.0  # seconds between looks when nothing wakes the controller
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0  # seconds before trying a failed pipeline again: doubling, capped
JOIN_TIMEOUT = 2.0  # seconds close() waits for the pipelines' threads once their workers are stopped
STOPPED = "stopped by stop-pipeline"


class Controller:
    def __init__(self, store: Store, jobs: Jobs, runner: Runner, workspaces: Path) -> None:
        self.store = store
        self.jobs = jobs
        self.runner = runner
        self.workspaces = workspaces  # where local workers get their /pfs
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Watches every pipeline there is (after a restart: resumes their jobs)."""
        with self.store.meta.transaction() as tx:
            for p in tx.list_pipelines():
                self.watch(p.name)

    def watch(self, name: str) -> None:
        """Makes sure pipeline NAME has its thread."""
        with self._lock:
            thread = self._threads.get(name)
            if thread is None or not thread.is_alive():
                thread = self._threads[name] = threading.Thread(target=self._loop, args=(name,),
                                                                name=f"pipeline-{name}", daemon=True)
                thread.start()

    def close(self) -> None:
        """Stops every pipeline's thread and their workers, within the runner's STOP_TIMEOUT and a little."""
        self._stopping.set()
        self.store.notify_finished()
        self.runner.close()
        with self._lock:
            threads = list(self._threads.values())
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def stop_jobs(self, name: str) -> None:
        """Ends pipeline NAME's running jobs as failures and stops their workers (stop-pipeline)."""
        for job in self.jobs.list_jobs(name):
            if not job.is_done:
                self.jobs.stop_job(job.id, STOPPED)
                self.runner.stop(job.id)

    # -- one pipeline

    def _loop(self, name: str) -> None:
        """Runs pipeline NAME's jobs; a failure is logged, recorded on the pipeline and tried again, later each
        time, until a try goes well."""
        failures, said = 0, ""
        while not self._stopping.is_set():
            try:
                with self.store.meta.transaction() as tx:
                    pipeline = tx.get_pipeline(name)
                if pipeline is None:
                    return  # deleted
                busy = self._step(pipeline)
                if failures or pipeline.failures:
                    log.info("pipeline %s: running again after %d failed tries", name, failures or pipeline.failures)
                    self._record(name, "", 0)
                failures, said = 0, ""
                if busy:
                    continue
                self.store.wait_finished(IDLE_WAIT)
            except Exception as err:  # noqa: BLE001 - nothing may end a pipeline's thread
                if self._stopping.is_set():
                    return
                failures += 1
                reason = _describe(err)
                if reason != said:  # the same failure again is not logged again
                    expected = isinstance(err, (PfsError, OSError))
                    log.warning("pipeline %s: %s; trying again", name, reason, exc_info=not expected)
                    said = reason
                self._record(name, reason, failures)
                self._stopping.wait(min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX))

    def _step(self, pipeline: PipelineInfo) -> bool:
        """Runs the pipeline's unfinished job, or makes and runs its next one; whether there was one."""
        if pipeline.state != PipelineState.RUNNING:
            return False
        jobs = self.jobs.list_jobs(pipeline.name)  # newest first
        job = next((j for j in jobs if not j.is_done), None) or self._next_job(pipeline, jobs)
        if job is None:
            return False
        self._run(job, pipeline)
        return True

    def _record(self, name: str, reason: str, failures: int) -> None:
        """Records on the pipeline why its last try failed (REASON; '' once one went well)."""
        try:
            with self.store.meta.transaction() as tx:
                current = tx.get_pipeline(name)
                if current is not None and (current.reason, current.failures) != (reason, failures):
                    tx.put_pipeline(dataclasses.replace(current, reason=reason, failures=failures))
        except Exception as err:  # noqa: BLE001 - the store itself failing: the log has it
            log.warning("pipeline %s: cannot record its failure: %s", name, _describe(err))

    def _next_job(self, pipeline: PipelineInfo, jobs: list[JobInfo]) -> JobInfo | None:
        """The job for the oldest commit not yet processed (the first input's first), or None. JOBS: the
        pipeline's jobs so far, newest first."""
        processed = dict(pipeline.processed)
        heads: dict[str, str] = {}
        trigger: tuple[InputSpec, str] | None = None
        for i in pipeline.spec.inputs:
            finished = self._finished_commits(i.repo, i.ref)
            if not finished:
                return None  # every input needs a commit
            heads[i.repo] = finished[-1]
            done = processed.get(i.repo)
            newer = finished[finished.index(done) + 1:] if done in finished else finished
            if pipeline.reprocess:
                newer = finished[-1:]
            if trigger is None and newer:
                trigger = (i, newer[0])
        if trigger is None:
            return None
        spec, commit = trigger
        heads[spec.repo] = commit
        if jobs and not pipeline.reprocess and {(i.repo, i.commit) for i in jobs[0].inputs} == set(
                heads.items()):  # made just before a restart, which came before it was recorded as processed
            self._processed(pipeline.name, heads)
            return None
        since = "" if pipeline.reprocess or spec.incremental == "none" else _last_input(jobs, spec.repo)
        skipped = bool(since) and not spec.run_empty and self.store.same_tree(
            CommitRef(spec.repo, commit), CommitRef(spec.repo, since))
        inputs = [(dataclasses.replace(i, ref=heads[i.repo]), since if i.repo == spec.repo else "")
                  for i in pipeline.spec.inputs]
        job = self.jobs.make_job(names.new_commit_id(), pipeline.spec.transform, inputs,
                                 pipeline.spec.parallelism.resolve(self.runner.capacity()), pipeline.name,
                                 pipeline.name, MAX_ATTEMPTS, fresh_output=not since, skipped=skipped)
        self._processed(pipeline.name, heads)
        if skipped:
            log.info("pipeline %s: nothing new in %s@%s; job %s skipped", pipeline.name, spec.repo, commit, job.id)
        return None if skipped else job

    def _processed(self, name: str, heads: dict[str, str]) -> None:
        """Records the input commits a job was made for."""
        with self.store.meta.transaction() as tx:
            current = tx.get_pipeline(name)
            if current is not None:
                tx.put_pipeline(dataclasses.replace(current, processed=tuple(sorted(heads.items())), reprocess=False))

    def _finished_commits(self, repo: str, branch: str) -> list[str]:
        """The finished commits of REPO's BRANCH, oldest first."""
        try:
            commits = self.store.list_commits(repo, branch)
        except NotFound:
            return []
        return [c.id for c in reversed(commits) if c.is_finished]

    # -- one job

    def _run(self, job: JobInfo, pipeline: PipelineInfo) -> None:
        """Runs the job's shards until it is done: each not yet successful shard, tried up to its limit."""
        while not self._stopping.is_set():
            job = self.jobs.inspect_job(job.id)
            if job.is_done:
                return
            if self._stopped(pipeline.name):  # since this job was made
                self.jobs.stop_job(job.id, STOPPED)
                return
            todo = [s.index for s in job.shards if s.state != ShardState.SUCCESS and s.attempts < job.max_attempts]
            for s in job.shards:
                if s.state == ShardState.RUNNING and s.attempts >= job.max_attempts:  # its worker was lost with the server
                    self._report(job.id, s.index, s.attempts, "its worker was lost (the server stopped)")
            if not todo:  # the job ends with the reports just made
                self.store.wait_finished(IDLE_WAIT)
                continue
            with ThreadPoolExecutor(min(job.parallelism, len(todo)),
                                    thread_name_prefix=f"worker-{pipeline.name}") as pool:
                list(pool.map(lambda shard: self._run_shard(job, shard), todo))

    def _stopped(self, name: str) -> bool:
        with self.store.meta.transaction() as tx:
            current = tx.get_pipeline(name)
        return current is not None and current.state == PipelineState.STOPPED

    def _run_shard(self, job: JobInfo, shard: int) -> None:
        """Runs a worker for SHARD; a worker that could not start, or ended without reporting, is a failed try."""
        attempt = job.shards[shard].attempts + 1
        try:
            code, tail = self.runner.run(job, shard, self.workspaces / f"{job.id}-{shard}-{attempt}")
        except Exception as err:
            self._report(job.id, shard, attempt, f"its worker could not start: {_describe(err)}")
            raise
        if not self._stopping.is_set():
            last = tail.splitlines()[-1] if tail else ""
            self._report(job.id, shard, attempt, f"its worker exited with status {code} without reporting: {last}")

    def _report(self, job_id: str, shard: int, attempt: int, why: str) -> None:
        """Records try ATTEMPT at SHARD as failed with WHY, unless it has ended; a try its worker never took is
        taken here, so that it counts."""
        try:
            current = self.jobs.inspect_job(job_id).shards[shard]
            if current.attempts < attempt:
                current = self.jobs.start_shard(job_id, shard).shards[shard]
            if current.state == ShardState.RUNNING:
                self.jobs.finish_shard(job_id, shard, current.attempts, ShardInfo(shard, exit_code=-1, error=why))
        except PfsError as err:  # the job ended meanwhile, or a worker reported after all
            log.info("job %s shard %d: %s", job_id, shard, err)


def _describe(err: Exception) -> str:
    """ERR in one line: a domain error's message, an OSError's file and reason, else its type and text."""
    if isinstance(err, PfsError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return f"{type(err).__name__}: {err}".splitlines()[0]


def _last_input(jobs: list[JobInfo], repo: str) -> str:
    """REPO's commit in the newest successful of JOBS: what an incremental job shows the changes after."""
    for job in jobs:
        if job.state == JobState.SUCCESS:
            return next((i.commit for i in job.inputs if i.repo == repo), "")
    return ""

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
        self._stopping.set()
        self.store.notify_finished()
        self.runner.close()
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(5)

    # -- one pipeline

    def _loop(self, name: str) -> None:
        while not self._stopping.is_set():
            try:
                with self.store.meta.transaction() as tx:
                    pipeline = tx.get_pipeline(name)
                if pipeline is None:
                    return  # deleted
                if pipeline.state == PipelineState.RUNNING:
                    jobs = self.jobs.list_jobs(name)  # newest first
                    job = next((j for j in jobs if not j.is_done), None) or self._next_job(pipeline, jobs)
                    if job is not None:
                        self._run(job, pipeline)
                        continue
            except PfsError as err:  # an input repo deleted, say: the pipeline waits
                log.warning("pipeline %s: %s", name, err)
            self.store.wait_finished(IDLE_WAIT)

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
            todo = [s.index for s in job.shards if s.state != ShardState.SUCCESS and s.attempts < job.max_attempts]
            for s in job.shards:
                if s.state == ShardState.RUNNING and s.attempts >= job.max_attempts:  # worker lost with the server
                    self._report_lost(job, s, "its worker was lost (the server stopped)")
            if not todo:  # the job ends with the reports just made
                self.store.wait_finished(IDLE_WAIT)
                continue
            with ThreadPoolExecutor(min(job.parallelism, len(todo)),
                                    thread_name_prefix=f"worker-{pipeline.name}") as pool:
                list(pool.map(lambda shard: self._run_shard(job, shard), todo))

    def _run_shard(self, job: JobInfo, shard: int) -> None:
        attempt = job.shards[shard].attempts + 1
        code, tail = self.runner.run(job, shard, self.workspaces / f"{job.id}-{shard}-{attempt}")
        if self._stopping.is_set():
            return
        current = self.jobs.inspect_job(job.id).shards[shard]
        if current.state == ShardState.RUNNING:  # the worker ended without reporting
            last = tail.splitlines()[-1] if tail else ""
            self._report_lost(job, current, f"its worker exited with status {code} without reporting: {last}")

    def _report_lost(self, job: JobInfo, shard: ShardInfo, why: str) -> None:
        try:
            self.jobs.finish_shard(job.id, shard.index, shard.attempts,
                                   ShardInfo(shard.index, exit_code=-1, error=why))
        except PfsError as err:  # a worker reported after all
            log.info("job %s shard %d: %s", job.id, shard.index, err)


def _last_input(jobs: list[JobInfo], repo: str) -> str:
    """REPO's commit in the newest successful of JOBS: what an incremental job shows the changes after."""
    for job in jobs:
        if job.state == JobState.SUCCESS:
            return next((i.commit for i in job.inputs if i.repo == repo), "")
    return ""

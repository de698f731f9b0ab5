"""Jobs: a transform over finished input commits, split into shards that workers take, run and report.

A worker takes its shard (StartShard: a new attempt, whose staged files
replace any an earlier attempt left), stages the files it wrote and reports.
The output commit is made, in one transaction, when every shard has
succeeded: each shard's files in shard order, so files that several shards
wrote are appended 0..N-1 whichever finished first. A failed shard fails the
job and nothing is committed.
"""

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator

from pfs.core import names, paths, specs
from pfs.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pfs.core.model import (
    LOG_STREAMS, MAX_LOG_TEXT, CommitRef, FileWrite, InputSpec, JobInfo, JobInput, JobSpec, JobState, LogLine,
    ShardInfo, ShardState, Transform,
)
from server.meta import Tx
from server.store import Store

ERROR_CHARS = 4000  # of a failed shard's error, kept with the job
# What the store keeps of a shard's log (characters, and a row's cost a line): its last lines, as a container's
# log rotates, so that a command printing without end cannot fill the server's disk. The shard's error keeps the
# last lines of its stderr whatever this drops.
LOG_KEEP = 16 << 20
LOG_PAGE = 1000  # log lines read from the store at a time, and sent in one message
# A follower of a log looks for new lines this often (a line added brings no news: a worker adds many), and looks
# back this many seconds each time: PostgreSQL numbers a line as it is added, so a line may become visible after a
# later-numbered one was sent, when its writer's transaction ends last.
FOLLOW_WAIT, FOLLOW_BACK = 0.5, 3.0
FOLLOW_MIN = 0.1  # seconds between a follower's looks at least, when news (of any job, any commit) wakes it
FOLLOW_SETTLE = 1.0  # seconds after a job ended that lines may still come (the last lines of a worker lost)


class Jobs:
    def __init__(self, store: Store, capacity: Callable[[], int]) -> None:
        self.store = store
        self.meta = store.meta
        self.capacity = capacity  # the runner's: what a COEFFICIENT parallelism multiplies

    def create_job(self, spec: JobSpec) -> JobInfo:
        """A job of its own (`pfs create-job`): every input whole, a fresh output, one try per shard."""
        specs.check_job(spec)
        job_id = names.new_commit_id()
        return self.make_job(job_id, spec.transform, [(i, "") for i in spec.inputs],
                             spec.parallelism.resolve(self.capacity()), spec.output_repo or f"job-{job_id[:8]}")

    def make_job(self, job_id: str, transform: Transform, inputs: list[tuple[InputSpec, str]], parallelism: int,
                 output_repo: str, pipeline: str = "", max_attempts: int = 1, fresh_output: bool = True,
                 skipped: bool = False, first: Callable[[Tx], None] = lambda tx: None, timeout: float = 0.0,
                 datum_timeout: float = 0.0) -> JobInfo:
        """Records a job over INPUTS (each with the commit it shows only the changes after, or ''), ready to run:
        PARALLELISM workers at most, the inputs and the output as pfs.core.specs allows (checked by the caller);
        stopped after TIMEOUT seconds, each try's command after DATUM_TIMEOUT (0: no limit).
        FIRST runs first in the same transaction (a controller's: its lease checked, its inputs marked processed).

        A SKIPPED job (nothing new, for a pipeline) is recorded done, with no shards.
        """
        commits = []
        for i, _ in inputs:
            commit = self.store.inspect_commit(CommitRef(i.repo, i.ref))
            if not commit.is_finished:
                raise FailedPrecondition(
                    f"commit {commit.id} of {i.repo!r} is still open; finish it first (pfs finish-commit)")
            commits.append(commit)
        caps = [self.store.shard_units(CommitRef(c.repo, c.id), i.method, parallelism)
                for (i, _), c in zip(inputs, commits)]
        moduli = [1] * len(inputs) if skipped else shard_moduli(caps, parallelism)
        job_inputs = tuple(JobInput(i.repo, c.id, i.method, m, since, i.incremental if since else "none")
                           for (i, since), c, m in zip(inputs, commits, moduli))
        try:
            self.store.create_repo(output_repo)
        except AlreadyExists:  # the output of earlier jobs
            pass
        now = time.time()
        with self.meta.transaction() as tx:
            first(tx)
            job = JobInfo(
                id=job_id, transform=transform, inputs=job_inputs, parallelism=parallelism,
                output_repo=output_repo, pipeline=pipeline, started=now,
                prev_output=tx.get_branch(output_repo, "master") or "",
                shards=() if skipped else tuple(ShardInfo(i) for i in range(math.prod(moduli))),
                max_attempts=max_attempts, fresh_output=fresh_output, timeout=timeout, datum_timeout=datum_timeout,
                state=JobState.SKIPPED if skipped else JobState.RUNNING, finished=now if skipped else 0.0,
            )
            tx.put_job(job)
        return job

    def inspect_job(self, job_id: str) -> JobInfo:
        with self.meta.transaction() as tx:
            return self._job(tx, job_id)

    def list_jobs(self, pipeline: str = "") -> list[JobInfo]:
        with self.meta.transaction() as tx:
            return tx.list_jobs(pipeline)

    def check_pipeline(self, name: str) -> None:
        """NotFound unless there is a pipeline NAME, or a job of one (a deleted pipeline's jobs stay, and are asked
        for by its name): a misspelt name given to list-job or get-logs would otherwise show nothing, as a pipeline
        with no job yet does."""
        with self.meta.transaction() as tx:
            if tx.get_pipeline(name) is None and not tx.list_jobs(name):
                raise NotFound(f"pipeline {name!r} not found, nor any job of one of that name (see `pfs "
                               "list-pipeline`)")

    def start_shard(self, job_id: str, index: int, attempt: int = 0) -> JobInfo:
        """A worker takes a shard: a new try at it (ATTEMPT 0), whose staged files replace any an earlier try left,
        or try ATTEMPT, which a controller started it for (launch_shard)."""
        with self.meta.transaction() as tx:
            job = self._job(tx, job_id)
            shard = self._shard(job, index)
            if attempt:
                if shard.state != ShardState.RUNNING or shard.attempts != attempt:
                    raise FailedPrecondition(f"shard {index} of job {job_id} is not at try {attempt} (it is "
                                             f"{shard.state}, try {shard.attempts}): its controller moved on")
                return job
            job = self._new_try(tx, job, shard, "")
        return job

    def launch_shard(self, job_id: str, index: int, server: str, fence: Callable[[Tx], None]) -> JobInfo:
        """A new try at a shard, whose worker SERVER's runner is about to start; FENCE (the controller's lease)
        checked in the same transaction."""
        with self.meta.transaction() as tx:
            fence(tx)
            job = self._job(tx, job_id)
            return self._new_try(tx, job, self._shard(job, index), server)

    def _new_try(self, tx: Tx, job: JobInfo, shard: ShardInfo, server: str) -> JobInfo:
        if job.is_done:
            raise FailedPrecondition(f"job {job.id} is already finished ({job.state})")
        if shard.state == ShardState.SUCCESS:
            raise FailedPrecondition(f"shard {shard.index} of job {job.id} has already succeeded")
        tx.clear_staged(job.id, shard.index)
        shard = ShardInfo(shard.index, ShardState.RUNNING, shard.attempts + 1, time.time(), server=server)
        tx.put_shard(job.id, shard)
        return _with_shard(job, shard)

    def put_shard_files(self, job_id: str, index: int, attempt: int, writes: list[FileWrite]) -> None:
        if any(w.split for w in writes):  # a worker writes files as /pfs/out holds them
            raise InvalidArgument("a job's output files are written as they are named: no split writes")
        with self.store.recording(writes, "/pfs/out itself") as (tx, writes):
            self._running(tx, job_id, index, attempt)
            tx.stage_files(job_id, index, writes)

    def finish_shard(self, job_id: str, index: int, attempt: int, result: ShardInfo) -> JobInfo:
        """Records how a shard ended (RESULT: exit_code, error, byte counts); makes the output when all succeeded."""
        for name in ("bytes_in", "bytes_out", "bytes_sent"):
            if getattr(result, name) < 0:
                raise InvalidArgument(f"shard result {name} is {getattr(result, name)}; a count of bytes is 0 or more")
        for name in ("mounted", "uploaded"):
            _check_time(f"shard result {name}", getattr(result, name))
        if len(result.error) > MAX_LOG_TEXT:
            raise InvalidArgument(f"shard result error is {len(result.error)} characters long; at most "
                                  f"{MAX_LOG_TEXT} are allowed")
        with self.meta.transaction() as tx:
            job, shard = self._running(tx, job_id, index, attempt)
            failed = bool(result.error)
            shard = dataclasses.replace(
                shard, state=ShardState.FAILURE if failed else ShardState.SUCCESS, finished=time.time(),
                exit_code=result.exit_code, error=result.error[-ERROR_CHARS:], bytes_in=result.bytes_in,
                bytes_out=result.bytes_out, bytes_sent=result.bytes_sent, mounted=result.mounted,
                uploaded=result.uploaded)
            tx.put_shard(job_id, shard)
            job = _with_shard(job, shard)
            if job.is_done:  # another shard failed first
                pass
            elif failed and shard.attempts >= job.max_attempts:
                tries = f" ({shard.attempts} tries)" if shard.attempts > 1 else ""
                tx.put_job(job := self._end(tx, job, JobState.FAILURE, f"shard {index} failed{tries}: {shard.error}"))
            elif all(s.state == ShardState.SUCCESS for s in job.shards):
                tx.put_job(job := self._commit_output(tx, job))
        self.store.notify_finished()  # the controller starts the next try, or the next job
        return job

    def stop_job(self, job_id: str, why: str) -> JobInfo:
        """Ends a running job as a failure (WHY), with its running shards: no worker may report to it after."""
        with self.meta.transaction() as tx:
            job = self._job(tx, job_id)
            if job.is_done:
                return job
            now = time.time()
            shards = tuple(dataclasses.replace(s, state=ShardState.FAILURE, finished=now, exit_code=-1, error=why)
                           if s.state == ShardState.RUNNING else s for s in job.shards)
            job = self._end(tx, dataclasses.replace(job, shards=shards), JobState.FAILURE, why)
            tx.put_job(job)
        self.store.notify_finished()
        return job

    def add_logs(self, lines: list[LogLine]) -> None:
        for x in lines:
            _check_time("log line time", x.time)
            if x.stream not in LOG_STREAMS:
                raise InvalidArgument(f"log line stream {x.stream[:40]!r} is unknown; use one of "
                                      f"{', '.join(LOG_STREAMS)}")
            if len(x.text) > MAX_LOG_TEXT:
                raise InvalidArgument(f"log line is {len(x.text)} characters long; at most {MAX_LOG_TEXT} are allowed")
            if "\0" in x.text:  # which PostgreSQL's text cannot hold; a worker sends U+FFFD for it
                raise InvalidArgument("log line holds a NUL character; send U+FFFD in its place")
            if x.shard < 0:
                raise InvalidArgument(f"log line shard {x.shard} is negative")
        with self.meta.transaction() as tx:
            for job_id in {x.job for x in lines}:
                self._job(tx, job_id)
            tx.add_logs(lines, LOG_KEEP)

    def logs(self, job_id: str = "", pipeline: str = "", tail: int = 0) -> Iterator[list[LogLine]]:
        """The log lines of job JOB_ID, or of every job of PIPELINE (the last TAIL of them, where TAIL is given), in
        pages of LOG_PAGE, each read when asked for."""
        after = self._log_start(job_id, pipeline, tail)
        while page := self._log_page(job_id, pipeline, after):
            after = page[-1][0]
            yield [line for _, line in page]

    async def follow_logs(self, job_id: str = "", pipeline: str = "", tail: int = 0) -> AsyncIterator[list[LogLine]]:
        """As logs, then each line added after, until job JOB_ID has ended (PIPELINE's: until the caller stops, or
        NotFound once neither the pipeline nor a job of it is left); holds no thread while it waits."""
        after = await asyncio.to_thread(self._log_start, job_id, pipeline, tail)
        sent: dict[int, float] | None = None  # the lines sent after AFTER: when each was (None: the first look)
        while True:
            looked = time.monotonic()
            ended = bool(job_id) and await asyncio.to_thread(self._ended, job_id)
            if not job_id:
                await asyncio.to_thread(self.check_pipeline, pipeline)
            read = after
            while page := await asyncio.to_thread(self._log_page, job_id, pipeline, read):
                read = page[-1][0]
                fresh = [line for n, line in page if sent is None or n not in sent]
                if sent is not None:
                    sent.update((n, time.monotonic()) for n, _ in page if n not in sent)
                if fresh:
                    yield fresh
            if ended:
                return
            if sent is None:  # what was there (however long) is not kept: new lines come after it
                after, sent = read, {}
            else:
                settled = [n for n, when in sent.items() if when < time.monotonic() - FOLLOW_BACK]
                after = max(settled, default=after)  # no line numbered before these is still to come
                sent = {n: when for n, when in sent.items() if n > after}
            await asyncio.sleep(max(0.0, looked + FOLLOW_MIN - time.monotonic()))  # however much news comes
            await self.store.news.wait_async(self.store.news.generation, FOLLOW_WAIT)  # a job's end is news

    def _ended(self, job_id: str) -> bool:
        """Whether job JOB_ID ended FOLLOW_SETTLE seconds ago or more."""
        job = self.inspect_job(job_id)
        return job.is_done and time.time() - job.finished >= FOLLOW_SETTLE

    def _log_start(self, job_id: str, pipeline: str, tail: int) -> int:
        """The number of the line the log is read after: 0, or the line before its last TAIL lines; NotFound if
        there is no job JOB_ID."""
        with self.meta.transaction() as tx:
            if job_id:
                self._job(tx, job_id)
            return tx.logs_before_last(job_id, pipeline, tail) if tail else 0

    def _log_page(self, job_id: str, pipeline: str, after: int) -> list[tuple[int, LogLine]]:
        with self.meta.transaction() as tx:
            return tx.logs(job_id, pipeline, after, LOG_PAGE)

    # -- helpers

    def _commit_output(self, tx: Tx, job: JobInfo) -> JobInfo:
        writes = []
        seen: set[str] = set()
        for shard in job.shards:  # in shard order: a file several shards wrote is their outputs appended 0..N-1
            for w in tx.staged_files(job.id, shard.index):
                path = paths.normalize(w.path)
                first = path not in seen  # the first shard's file replaces the previous output's if fresh or overwrite
                writes.append(dataclasses.replace(w, overwrite=first and (job.fresh_output or job.transform.overwrite)))
                seen.add(path)
        provenance: dict[CommitRef, None] = {}  # the inputs and, transitively, what they were computed from
        for i in job.inputs:
            provenance[CommitRef(i.repo, i.commit)] = None
            provenance.update(dict.fromkeys(tx.get_commit(i.repo, i.commit).info.provenance))
        commit = self.store.commit_files(tx, job.output_repo, job.output_branch, tuple(provenance), writes,
                                         fresh=job.fresh_output)
        return self._end(tx, dataclasses.replace(job, output_commit=commit.id), JobState.SUCCESS, "")

    def _end(self, tx: Tx, job: JobInfo, state: JobState, error: str) -> JobInfo:
        for shard in job.shards:
            tx.clear_staged(job.id, shard.index)
        return dataclasses.replace(job, state=state, error=error, finished=time.time())

    def _job(self, tx: Tx, job_id: str) -> JobInfo:
        job = tx.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found (pfs list-job shows the jobs)")
        return job

    def _shard(self, job: JobInfo, index: int) -> ShardInfo:
        if not 0 <= index < len(job.shards):
            raise InvalidArgument(f"job {job.id} has shards 0..{len(job.shards) - 1}, not {index}")
        return job.shards[index]

    def _running(self, tx: Tx, job_id: str, index: int, attempt: int) -> tuple[JobInfo, ShardInfo]:
        job = self._job(tx, job_id)
        shard = self._shard(job, index)
        if shard.state != ShardState.RUNNING or shard.attempts != attempt:
            raise FailedPrecondition(
                f"shard {index} of job {job_id} is not running attempt {attempt} "
                f"(it is {shard.state}, attempt {shard.attempts}); take it again with StartShard")
        return job, shard


def _check_time(what: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(f"{what} is {value}; give seconds since the epoch")


def _with_shard(job: JobInfo, shard: ShardInfo) -> JobInfo:
    shards = list(job.shards)
    shards[shard.index] = shard
    return dataclasses.replace(job, shards=tuple(shards))


def shard_moduli(caps: list[int], parallelism: int) -> list[int]:
    """How many parts each input is cut into: their product (the job's shards) as large as it can be, up to
    PARALLELISM.

    An input is cut into at most its cap (global: 1; reduce: its top-level entries; map: its blocks), so no shard
    is empty where that can be avoided. Parts are handed out in turn, which keeps a cross product of several
    inputs balanced (4 workers over two inputs: 2 x 2); where that makes fewer shards than cutting the largest
    inputs first (5 workers over two: 2 x 2 is 4, 5 x 1 is 5), the inputs are cut so instead: each worker then
    sees one of 5 parts of the first input and all of the second, and the job has the workers it was given.
    """
    balanced = [1] * len(caps)
    grown = True
    while grown:
        grown = False
        for j, cap in enumerate(caps):
            if balanced[j] < cap and math.prod(balanced) // balanced[j] * (balanced[j] + 1) <= parallelism:
                balanced[j] += 1
                grown = True
    widest = [1] * len(caps)
    for j in sorted(range(len(caps)), key=lambda j: -caps[j]):
        widest[j] = max(1, min(caps[j], parallelism // math.prod(widest)))
    return widest if math.prod(widest) > math.prod(balanced) else balanced

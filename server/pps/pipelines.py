"""Pipelines: created from manifests, updated, stopped and started; flush-commit waits on their jobs.

A pipeline runs as its creator (whoever last set its spec): it is made only from inputs they may read, into an
output repo they own (made for them if new), its command runs as a user that is not root unless they are the
cluster's root (pfs/core/run_as.py), and the controller makes no job while they can no longer read an input.
"""

import asyncio
import dataclasses
import time
from collections.abc import Callable

from pfs.core import run_as, specs
from pfs.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pfs.core.model import CommitInfo, CommitRef, JobInfo, JobState, PipelineInfo, PipelineSpec, PipelineState
from server.pps.controller import DELETED, STOPPED, Controller
from server.pps.runners import Runner
from server.roles import OWNER, READER, Roles
from server.store import Store

# failed tries in a row of a pipeline's controller (about 3 s of them) after which flush-commit says why it has no
# job to wait for, rather than wait for ever as it tries again
FLUSH_FAILURES = 3


class Pipelines:
    def __init__(self, store: Store, controller: Controller, runner: Runner, roles: Roles | None) -> None:
        self.store = store
        self.meta = store.meta
        self.controller = controller
        self.jobs = controller.jobs
        self.runner = runner
        self.roles = roles  # None: a server without tokens, where anyone may do all

    def create(self, spec: PipelineSpec, update: bool = False, reprocess: bool = False,
               creator: str = "") -> PipelineInfo:
        """A new pipeline (or, with UPDATE, a new spec for one: it applies to commits to come, or to the
        current heads too with REPROCESS) of CREATOR ('' for the cluster's root); its output repo takes its name."""
        self._check(spec)
        spec = self._as_creator(spec, creator)
        try:
            self.store.create_repo(spec.name, f"output of pipeline {spec.name}")
            if creator:
                self.roles.set(spec.name, creator, OWNER)
        except AlreadyExists:
            if creator:
                self.roles.check(creator, spec.name, OWNER, "make a pipeline writing")
        with self.meta.transaction() as tx:
            old = tx.get_pipeline(spec.name)
            if update:
                if old is None:
                    raise NotFound(f"pipeline {spec.name!r} not found; create it with pfs create-pipeline")
                info = dataclasses.replace(old, spec=spec, version=old.version + 1, reprocess=reprocess,
                                           creator=creator)
            else:
                if old is not None:
                    raise AlreadyExists(f"pipeline {spec.name!r} already exists; change it with pfs update-pipeline")
                info = PipelineInfo(spec, time.time(), creator=creator)
            tx.put_pipeline(info)
        self.controller.watch()
        self.store.notify_finished()
        return info

    def inspect(self, name: str) -> PipelineInfo:
        with self.meta.transaction() as tx:
            return self._pipeline(tx, name)

    def list_pipelines(self) -> list[PipelineInfo]:
        with self.meta.transaction() as tx:
            return tx.list_pipelines()

    def delete(self, name: str) -> None:
        """Deletes the pipeline, ending its running job as a failure; its output repo and its jobs stay."""
        with self.meta.transaction() as tx:
            self._pipeline(tx, name)
            tx.delete_pipeline(name)
        self.controller.stop_jobs(name, DELETED)
        self.store.notify_finished()

    def set_state(self, name: str, state: PipelineState) -> PipelineInfo:
        """Starts or stops the pipeline; stopping ends its running job as a failure and stops its workers, and has
        the pipeline, once started, run the heads of its inputs once more (in a fresh output, as update-pipeline
        --reprocess does): else the commits that job had were counted as processed, and nothing made their output
        until another commit came."""
        with self.meta.transaction() as tx:
            info = dataclasses.replace(self._pipeline(tx, name), state=state)
            if state == PipelineState.STOPPED and any(not j.is_done for j in tx.list_jobs(name)):
                info = dataclasses.replace(info, reprocess=True)
            tx.put_pipeline(info)
        if state == PipelineState.STOPPED:
            self.controller.stop_jobs(name, STOPPED)
        self.store.notify_finished()
        return info

    async def flush(self, ref: CommitRef, visible: Callable[[str], bool]) -> list[JobInfo]:
        """Waits until every pipeline downstream of the commit REF whose output repo is VISIBLE (to the caller) has
        a finished job that saw it (or a commit computed from it); returns those jobs, upstream first. Another
        user's pipeline, which the caller may not see, neither holds the caller up nor is named to them. Holds no
        thread while it waits: it looks at the jobs (in the event loop's pool of threads) only when news came (see
        server/news.py)."""
        commit, downstream = await asyncio.to_thread(self._flushing, ref)
        downstream = [p for p in downstream if visible(p.name)]
        failed = {p.name: p.failures for p in downstream}  # as the flush begins
        while True:
            since = self.store.news.generation
            found = await asyncio.to_thread(self._flushed, downstream, commit, failed)
            if found is not None:
                return found
            await self.store.news.wait_async(since)

    def _flushing(self, ref: CommitRef) -> tuple[CommitInfo, list[PipelineInfo]]:
        """What flush() waits for: the commit REF names, and the pipelines downstream of it."""
        commit = self.store.inspect_commit(ref)
        return commit, self._downstream(commit.repo, commit.branch)

    def _flushed(self, downstream: list[PipelineInfo], commit: CommitInfo,
                 failed: dict[str, int]) -> list[JobInfo] | None:
        """The finished job of each pipeline of DOWNSTREAM that saw COMMIT, or None while one is to come. A pipeline
        reading another's output waits for a job made after the job found of that one: an older job of it saw an
        older output (update-pipeline --reprocess runs a commit again, and its new output is to be seen too). One
        that failed FLUSH_FAILURES tries in a row to make its job, and once more than when the flush began (FAILED:
        its failures then; its cause may have been mended since), is said to fail, not waited for."""
        found, waiting, blocked = [], False, set()
        target, finished = CommitRef(commit.repo, commit.id), commit.finished
        made: dict[str, float] = {}  # the output repo of each job found: when that job ended
        # what a job must have seen of a repo's branch: the commit finished then, or a later one
        seen = {(commit.repo, commit.branch): finished}
        for p in downstream:
            job = self._job_of(p, target, max([finished, *(made.get(i.repo, 0.0) for i in p.spec.inputs)]), seen)
            if job is None and any(i.repo in blocked for i in p.spec.inputs):
                blocked.add(p.name)  # an upstream job failed or was skipped: this one gets no job for the commit
            elif job is None and (info := self.inspect(p.name)).state == PipelineState.STOPPED:
                raise FailedPrecondition(f"pipeline {p.name} is stopped, so no job of it sees {target}; "
                                         f"start it (pfs start-pipeline {p.name})")
            elif job is None and info.failures >= max(FLUSH_FAILURES, failed[p.name] + 1):
                raise FailedPrecondition(f"pipeline {p.name} failed {info.failures} times in a row to make its next "
                                         f"job, so none sees {target} yet: {info.reason} (it tries again; pfs "
                                         f"inspect-pipeline {p.name})")
            elif job is None or not job.is_done:
                waiting = True
            else:
                found.append(job)
                made[p.name] = job.finished
                if job.state in (JobState.FAILURE, JobState.SKIPPED):  # no output commit
                    blocked.add(p.name)
                else:
                    seen[p.name, "master"] = self.store.inspect_commit(CommitRef(p.name, job.output_commit)).finished
        return None if waiting else found

    # -- helpers

    def _check(self, spec: PipelineSpec) -> None:
        """The model's rules (pfs.core.specs), then what needs this server: its runner, the input repos, cycles."""
        specs.check_pipeline(spec)
        self.runner.check(spec.transform.image)
        for n, i in enumerate(spec.inputs):
            try:
                self.store.inspect_repo(i.repo)
            except NotFound:
                raise NotFound(f"manifest field inputs[{n}].repo: repo {i.repo!r} not found; "
                               f"create it (pfs create-repo {i.repo}) or the pipeline that makes it first") from None
        if spec.name in self._upstream([i.repo for i in spec.inputs]):
            raise InvalidArgument(f"manifest field inputs: pipeline {spec.name!r} would read its own output "
                                  "through other pipelines (a cycle)")

    def _as_creator(self, spec: PipelineSpec, creator: str) -> PipelineSpec:
        """SPEC as CREATOR's pipeline runs it (its command's user); PermissionDenied for an input they may not
        read, FailedPrecondition where this server's workers could not be kept from its secrets."""
        if not creator:
            return spec
        unconfined = self.runner.unconfined()
        if unconfined:
            raise FailedPrecondition(f"only the cluster's root may make pipelines on this server: {unconfined}")
        for i in spec.inputs:
            self.roles.check(creator, i.repo, READER, "read")
        user = run_as.for_creator(spec.transform.user, creator)
        return dataclasses.replace(spec, transform=dataclasses.replace(spec.transform, user=user))

    def _pipeline(self, tx, name: str) -> PipelineInfo:
        info = tx.get_pipeline(name)
        if info is None:
            raise NotFound(f"pipeline {name!r} not found (pfs list-pipeline shows the pipelines)")
        return info

    def _upstream(self, repos: list[str]) -> set[str]:
        """REPOS and every repo they are computed from through pipelines."""
        by_name = {p.name: p for p in self.list_pipelines()}
        seen: set[str] = set()
        todo = list(repos)
        while todo:
            repo = todo.pop()
            if repo not in seen:
                seen.add(repo)
                if repo in by_name:
                    todo.extend(i.repo for i in by_name[repo].spec.inputs)
        return seen

    def _downstream(self, repo: str, branch: str) -> list[PipelineInfo]:
        """The pipelines computed from REPO's BRANCH, directly or through others (from the master branch of
        their output repos), upstream first."""
        pipelines = self.list_pipelines()
        out: list[PipelineInfo] = []
        reached = {(repo, branch)}
        grown = True
        while grown:
            grown = False
            for p in pipelines:
                if p not in out and any((i.repo, i.ref) in reached for i in p.spec.inputs):
                    out.append(p)
                    reached.add((p.name, "master"))
                    grown = True
        return out

    def _job_of(self, pipeline: PipelineInfo, target: CommitRef, after: float,
                seen: dict[tuple[str, str], float]) -> JobInfo | None:
        """The pipeline's newest job started from AFTER on (when TARGET finished, or an upstream job found ended)
        that saw TARGET or a commit computed from it, and of each input branch SEEN names (repo, branch), the commit
        that finished then or a later one: a pipeline reading both a repo and another pipeline's output of it has
        seen both."""
        for job in self.jobs.list_jobs(pipeline.name):
            if job.started < after or not pipeline.made(job):  # nor can any older job be
                return None
            commits = [self.store.inspect_commit(CommitRef(i.repo, i.commit)) for i in job.inputs]
            saw_target = any(CommitRef(c.repo, c.id) == target or target in c.provenance for c in commits)
            if saw_target and all(c.finished >= seen[c.repo, c.branch] for c in commits if (c.repo, c.branch) in seen):
                return job
        return None

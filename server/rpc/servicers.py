"""The API and Chunks servicers over a Store, and the PPS servicer over Jobs.

Plain methods are blocking code run in a pool of threads; the calls that wait (subscribe-commit,
flush-commit) and the request stream are async (see server/rpc/status.py `translated`)."""

import asyncio
import contextlib
import itertools
from collections.abc import Iterator

import pfs
from pfs import chunk_dir
from pfs.core import memory
from pfs.core.model import (MAX_WRITE_LEVELS, MAX_WRITES, CommitRef, DirectRead, FileWrite, PipelineState, ShardInfo,
                            levels)
from pfs.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from pfs.proto import auth_pb2 as apb
from pfs.proto import auth_pb2_grpc
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import chunks_pb2_grpc
from pfs.proto import convert as cv
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pfs_pb2_grpc
from pfs.proto import pps_pb2 as ppb
from pfs.proto import pps_pb2_grpc
from server.check import check
from server.gc import Collector
from server.pps.controller import STOPPED_JOB
from server.pps.jobs import Jobs
from server.pps.pipelines import Pipelines
from server.rpc import blocking
from server.roles import OWNER, Roles
from server.rpc.auth import Access, caller
from server.rpc.status import translated
from server.store import Store
from server.tokens import ROOT, Tokens

EMPTY = pb.Empty()
BATCH_BYTES = 4 << 20  # compressed bytes per GetChunks message
LIST_BATCH = 1000  # files per ListFile message


class ApiServicer(pfs_pb2_grpc.APIServicer):
    def __init__(self, store: Store, runner: str, registry: str, direct_read: DirectRead | None,
                 access: Access, collector: Collector) -> None:
        self.store = store
        self.collector = collector
        self.runner = runner  # how pipeline workers run here
        self.registry = registry  # where images without a registry are pushed
        self.direct_read = direct_read  # how clients may read chunks without the server, if they may
        self.access = access

    @translated
    def Info(self, request, context):
        offer = self.direct_read
        if offer and offer.kind == chunk_dir.KIND and not self.access.own(self.access.subject(context)):
            offer = None  # the data dir, which only the root and its jobs' workers may read: no one else learns it
        direct = cv.direct_read_to_pb(offer) if offer else None
        return pb.ServerInfo(version=pfs.__version__, chunk_avg_size=self.store.chunk_avg_size, runner=self.runner,
                             registry=self.registry, direct_read=direct)

    @translated
    def CreateRepo(self, request, context):
        repo = self.store.create_repo(request.name, request.description)
        me = self.access.subject(context)
        if me != ROOT:  # its creator owns it
            self.access.roles.set(repo.name, me, OWNER)
        return cv.repo_to_pb(repo)

    @translated
    def InspectRepo(self, request, context):
        return cv.repo_to_pb(self.store.inspect_repo(request.name))

    @translated
    def ListRepo(self, request, context):
        me = self.access.subject(context)  # the repos it may read
        repos = [r for r in self.store.list_repos() if self.access.may_read(me, r.name)]
        return pb.RepoInfos(repos=[cv.repo_to_pb(r) for r in repos])

    @translated
    def DeleteRepo(self, request, context):
        self.store.delete_repo(request.name, request.force)
        return EMPTY

    @translated
    def StartCommit(self, request, context):
        provenance = tuple(cv.commit_ref_from_pb(p) for p in request.provenance)
        info = self.store.start_commit(request.repo, request.branch, request.parent, provenance, request.one_off,
                                       request.description)
        return cv.commit_to_pb(info)

    @translated
    def FinishCommit(self, request, context):
        ref = CommitRef(request.repo, request.ref)
        return cv.commit_to_pb(self.store.finish_commit(ref, request.description))

    @translated
    def InspectCommit(self, request, context):
        return cv.commit_to_pb(self.store.inspect_commit(cv.commit_ref_from_pb(request)))

    @translated
    def ListCommit(self, request, context):
        commits = self.store.list_commits(request.repo, request.branch, request.limit)
        return pb.CommitInfos(commits=[cv.commit_to_pb(c) for c in commits])

    @translated
    def DeleteCommit(self, request, context):
        self.store.delete_commit(cv.commit_ref_from_pb(request))
        return EMPTY

    @translated
    async def SubscribeCommit(self, request, context):
        async for info in self.store.subscribe_commits(request.repo, request.branch, request.new_only):
            # as the call began: a token revoked, or a role taken away, since then ends it
            self.access.check_read(self.access.subject(context), request.repo)
            yield cv.commit_to_pb(info)

    @translated
    def ListBranch(self, request, context):
        return pb.BranchInfos(branches=[cv.branch_to_pb(b) for b in self.store.list_branches(request.name)])

    @translated
    def SetBranch(self, request, context):
        return cv.branch_to_pb(self.store.set_branch(cv.commit_ref_from_pb(request.commit), request.branch))

    @translated
    def DeleteBranch(self, request, context):
        self.store.delete_branch(request.repo, request.branch, request.force)
        return EMPTY

    @translated
    def PutFiles(self, request, context):
        self.store.put_files(cv.commit_ref_from_pb(request.commit), _writes(request.files))
        return EMPTY

    @translated
    def InspectFile(self, request, context):
        return cv.file_to_pb(self.store.inspect_file(_ref(request), request.path))

    @translated
    def ListFile(self, request, context):
        infos = self.store.list_files(_ref(request), request.path, request.with_chunks, request.since,
                                      request.incremental or "diff", request.recursive, request.limit)
        while batch := list(itertools.islice(infos, LIST_BATCH)):
            message = pb.FileInfos()
            cv.add_files(message.files, batch)
            yield message

    @translated
    def DeleteFile(self, request, context):
        self.store.delete_file(_ref(request), request.path)
        return EMPTY


    @translated
    def GarbageCollect(self, request, context):
        grace = request.grace if request.HasField("grace") else None
        if grace is not None and not 0 <= grace < float("inf"):
            raise InvalidArgument(f"grace {grace} is not a number of seconds from 0")
        with _walking_the_store():
            for item in self.collector.collect(request.dry_run, grace):
                yield cv.update_to_pb(item, pb.GarbageCollectUpdate)

    @translated
    def Check(self, request, context):
        with _walking_the_store():
            for item in check(self.store.meta, self.store.chunks, request.read_data):
                yield cv.update_to_pb(item, pb.CheckUpdate)


@contextlib.contextmanager
def _walking_the_store() -> Iterator[None]:
    """A walk of every commit's trees (a collection, a check): what it took is given back to the kernel after."""
    try:
        yield
    finally:
        memory.release_freed_memory()


def _ref(request: pb.FileRequest) -> CommitRef:
    return cv.commit_ref_from_pb(request.commit)


def _writes(files) -> list[FileWrite]:
    """The files of a PutFiles or PutShardFiles request; InvalidArgument, before any is read, if they are more
    than one call may record."""
    if len(files) > MAX_WRITES:
        raise InvalidArgument(f"{len(files)} files in one call; a call records at most {MAX_WRITES} (send the "
                              "rest in more calls)")
    if (used := sum(levels(w.path) for w in files)) > MAX_WRITE_LEVELS:
        raise InvalidArgument(f"the paths of one call's files have {used} levels together; a call records at most "
                              f"{MAX_WRITE_LEVELS} (send the rest in more calls)")
    return [cv.write_from_pb(w) for w in files]


class ChunksServicer(chunks_pb2_grpc.ChunksServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @translated
    def MissingChunks(self, request, context):
        return cpb.ChunkAddresses(addresses=self.store.missing_chunks(list(request.addresses)))

    @translated
    async def PutChunks(self, request_iterator, context):
        def put(requests: Iterator[cpb.ChunkBatch]) -> int:
            return self.store.put_chunks([(c.address, c.compressed) for c in batch.chunks] for batch in requests)

        return cpb.PutChunksResponse(stored=await blocking.consumed(put, request_iterator))

    @translated
    def GetChunks(self, request, context):
        batch, size = [], 0
        for addr, frame in zip(request.addresses, self.store.get_chunks(list(request.addresses))):
            batch.append(cpb.ChunkData(address=addr, compressed=frame))
            size += len(frame)
            if size >= BATCH_BYTES:
                yield cpb.ChunkBatch(chunks=batch)
                batch, size = [], 0
        if batch:
            yield cpb.ChunkBatch(chunks=batch)

    @translated
    def LocateChunks(self, request, context):
        locations = self.store.locate_chunks(list(request.addresses))
        return cpb.ChunkLocations(locations=[cv.location_to_pb(loc) for loc in locations])


class PpsServicer(pps_pb2_grpc.PPSServicer):
    """Pipelines are their output repo's (rules.py): their creator owns it, its readers see them and their jobs."""

    def __init__(self, jobs: Jobs, pipelines: Pipelines, access: Access) -> None:
        self.jobs = jobs
        self.pipelines = pipelines
        self.access = access

    @translated
    def CreatePipeline(self, request, context):
        spec = cv.pipeline_spec_from_pb(request.spec)
        me = self.access.subject(context)
        return cv.pipeline_to_pb(self.pipelines.create(spec, request.update, request.reprocess,
                                                       creator="" if me == ROOT else me))

    @translated
    def InspectPipeline(self, request, context):
        return cv.pipeline_to_pb(self.pipelines.inspect(request.name))

    @translated
    def ListPipeline(self, request, context):
        me = self.access.subject(context)
        return ppb.PipelineInfos(pipelines=[cv.pipeline_to_pb(p) for p in self.pipelines.list_pipelines()
                                            if self.access.may_read(me, p.name)])

    @translated
    def DeletePipeline(self, request, context):
        self.pipelines.delete(request.name)
        return EMPTY

    @translated
    def StopPipeline(self, request, context):
        return cv.pipeline_to_pb(self.pipelines.set_state(request.name, PipelineState.STOPPED))

    @translated
    def StartPipeline(self, request, context):
        return cv.pipeline_to_pb(self.pipelines.set_state(request.name, PipelineState.RUNNING))

    @translated
    async def FlushCommit(self, request, context):
        me = self.access.subject(context)
        jobs = await self.pipelines.flush(cv.commit_ref_from_pb(request), lambda repo: self.access.may_read(me, repo))
        me = self.access.subject(context)  # who the token is now: it may have been revoked meanwhile
        return ppb.JobInfos(jobs=[cv.job_to_pb(j) for j in jobs if self.access.may_read(me, j.output_repo)])

    @translated
    def CreateJob(self, request, context):
        return cv.job_to_pb(self.jobs.create_job(cv.job_spec_from_pb(request)))

    @translated
    def InspectJob(self, request, context):
        job = self.jobs.inspect_job(request.id)
        self.access.check_read(self.access.subject(context), job.output_repo)
        return cv.job_to_pb(job)

    @translated
    def ListJob(self, request, context):
        me = self.access.subject(context)
        if request.pipeline:  # as get-logs: refused alike whether there is such a pipeline or not
            self.access.check_read(me, request.pipeline)
        jobs = self.jobs.list_jobs(request.pipeline)
        if request.pipeline and not jobs:
            self.jobs.check_pipeline(request.pipeline)
        return ppb.JobInfos(jobs=[cv.job_to_pb(j) for j in jobs if self.access.may_read(me, j.output_repo)])

    @translated
    def StopJob(self, request, context):
        job = self.jobs.inspect_job(request.id)
        self.access.check(self.access.subject(context), job.output_repo, OWNER, "stop the jobs of")
        if job.is_done:
            raise FailedPrecondition(f"job {job.id} has already ended ({job.state}): there is nothing to stop")
        return cv.job_to_pb(self.pipelines.controller.stop_job(job.id, STOPPED_JOB))

    @translated
    def StartShard(self, request, context):
        return cv.job_to_pb(self.jobs.start_shard(request.job, request.shard, request.attempt))

    @translated
    def PutShardFiles(self, request, context):
        self.jobs.put_shard_files(request.job, request.shard, request.attempt, _writes(request.files))
        return EMPTY

    @translated
    def FinishShard(self, request, context):
        result = ShardInfo(request.shard, exit_code=request.exit_code, error=request.error,
                           bytes_in=request.bytes_in, bytes_out=request.bytes_out, bytes_sent=request.bytes_sent,
                           mounted=request.mounted, uploaded=request.uploaded)
        return cv.job_to_pb(self.jobs.finish_shard(request.job, request.shard, request.attempt, result))

    @translated
    def PutLogs(self, request, context):
        self.jobs.add_logs([cv.log_from_pb(m) for m in request.lines])
        return EMPTY

    @translated
    async def GetLogs(self, request, context):
        if request.tail < 0:
            raise InvalidArgument(f"tail {request.tail} is negative; ask for the last N lines, or 0 for all")
        await asyncio.to_thread(self._may_read_logs, request, context)
        if not request.follow:
            pages = blocking.pulled(self.jobs.logs(request.job, request.pipeline, request.tail))
        else:
            pages = self.jobs.follow_logs(request.job, request.pipeline, request.tail)
        async for page in pages:
            if request.follow:  # as the call began: a token revoked, or a role taken away, since then ends it
                await asyncio.to_thread(self._may_read_logs, request, context)
            yield ppb.LogLines(lines=[cv.log_to_pb(x) for x in page])

    def _may_read_logs(self, request, context) -> None:
        """PermissionDenied unless the caller may read the logs REQUEST asks for; NotFound where they are no job's
        or pipeline's."""
        me = self.access.subject(context)
        if request.job:
            self.access.check_read(me, self.jobs.inspect_job(request.job).output_repo)
        elif request.pipeline:
            self.access.check_read(me, request.pipeline)
            self.jobs.check_pipeline(request.pipeline)
        elif me != ROOT:
            raise PermissionDenied(f"{me} may not read the logs of every job, only the cluster's root may: name a "
                                   "job or a pipeline (pfs get-logs --job ID or --pipeline NAME)")


class AuthServicer(auth_pb2_grpc.AuthServicer):
    """Tokens and roles; who may call which is server/rpc/rules.py's to say."""

    def __init__(self, store: Store, tokens: Tokens | None, roles: Roles | None) -> None:
        self.store = store
        self.tokens, self.roles = tokens, roles  # None: a server started with --no-token

    def _with_tokens(self) -> Tokens:
        if self.tokens is None:
            raise FailedPrecondition("this server was started with --no-token: it asks for no token, and knows none")
        return self.tokens

    @translated
    def WhoAmI(self, request, context):
        me = caller(self._with_tokens(), context.invocation_metadata())
        return apb.WhoAmIResponse(subject=me.subject, expires=me.expires)

    @translated
    def CreateToken(self, request, context):
        token, expires = self._with_tokens().create(request.subject, request.ttl)
        return apb.CreateTokenResponse(token=token, expires=expires)

    @translated
    def Revoke(self, request, context):
        return apb.RevokeResponse(revoked=self._with_tokens().revoke(request.subject, request.token))

    @translated
    def SetRole(self, request, context):
        self._with_tokens()
        self.store.inspect_repo(request.repo)  # NotFound for a repo that is not there
        self.roles.set(request.repo, request.subject, request.role)
        return self._roles(request.repo)

    @translated
    def GetRoles(self, request, context):
        self._with_tokens()
        self.store.inspect_repo(request.repo)
        return self._roles(request.repo)

    def _roles(self, repo: str) -> apb.Roles:
        return apb.Roles(roles=[apb.Role(subject=s, role=r) for s, r in sorted(self.roles.of(repo).items())])

"""The client: every server call, typed in pfs.core.model, failing only with domain errors."""

import functools
import json
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc

from pfs.client.auth import channel, find_token
from pfs.client.stalls import StallWatch
from pfs.client.status import domain_error
from pfs.core import frames
from pfs.core.errors import Conflict, InvalidArgument
from pfs.core.model import (
    MAX_LOCATE, BranchInfo, CheckProblem, CheckSummary, ChunkLocation, ChunkRef, CommitInfo, CommitRef, DirectRead,
    FileInfo, FileWrite, GarbageCollected, JobInfo, JobSpec, LogLine, PipelineInfo, PipelineSpec, Progress, RepoInfo,
    ShardInfo,
)
from pfs.proto import auth_pb2 as apb
from pfs.proto import auth_pb2_grpc
from pfs.proto import chunks_pb2 as cpb
from pfs.proto import chunks_pb2_grpc
from pfs.proto import convert as cv
from pfs.proto import pfs_pb2 as pb
from pfs.proto import pfs_pb2_grpc
from pfs.proto import pps_pb2 as ppb
from pfs.proto import pps_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:30650"
MAX_MESSAGE = 256 << 20
READ_AHEAD = 4  # chunks decompressed ahead of the reader
# A frame smaller than this is unpacked on the reader's thread: handing it to another costs more than unpacking it
# (a small file's chunk, ~2 KiB: 5 us to unpack, ~20 us through the pool)
INLINE_FRAME = 64 << 10
READ_TIMEOUT = 60.0  # seconds a read of chunks waits for the server's next message ($PFS_READ_TIMEOUT)
MIN_PING = 1.0  # seconds between the pings of a call under way, at least (see Client)
UNANSWERED = ("ping timeout", "keepalive watchdog timeout")  # what gRPC says of a call whose pings went unanswered
# Calls that change nothing are tried again when they find no server (UNAVAILABLE): the one that goes away
# under a long-lived client (a mount, a worker) is then left for the next of the address's servers without the
# call failing. Calls that change something are not: one may have been done before its server went away. Nor is
# GetChunks: retried after its server was killed, 3 calls in 25 hung (a client that had read chunks before; none
# of 25 without the retry), and a reader asks again anyway (a mount's next read, a download's next batch).
READ_ONLY = {"pfs.API": ("Info", "InspectRepo", "ListRepo", "InspectCommit", "ListCommit", "SubscribeCommit",
                         "ListBranch", "InspectFile", "ListFile"),
             "pfs.Chunks": ("MissingChunks", "LocateChunks"),
             "pps.PPS": ("InspectPipeline", "ListPipeline", "FlushCommit", "InspectJob", "ListJob", "GetLogs")}
SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": service, "method": m} for service, methods in READ_ONLY.items() for m in methods],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]},
}]})
TURN_POLL = 0.05  # seconds between a waiting writer's first tries at a busy branch...
MAX_TURN_POLL = 1.0  # ...doubling up to this


def default_address() -> str:
    """$PFS_ADDRESS, else pachctl's $PACHD_ADDRESS, else DEFAULT_ADDRESS."""
    return os.environ.get("PFS_ADDRESS") or os.environ.get("PACHD_ADDRESS") or DEFAULT_ADDRESS


def read_timeout() -> float:
    """$PFS_READ_TIMEOUT, else READ_TIMEOUT."""
    given = os.environ.get("PFS_READ_TIMEOUT")
    try:
        seconds = float(given) if given else READ_TIMEOUT
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise InvalidArgument(f"PFS_READ_TIMEOUT={given!r}: give the seconds a read may wait for the server, above 0")
    return seconds


class Client:
    def __init__(self, address: str | None = None, token: str | None = None) -> None:
        """A client of the server at ADDRESS (default $PFS_ADDRESS), showing it TOKEN (default: find_token())."""
        self.address = address or default_address()
        limit = read_timeout()
        ping_ms = int(max(limit / 2, MIN_PING) * 1000)
        self._channel = channel(
            self.address,
            token or find_token(),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                # a restarted server is found again within a second (gRPC's default backoff grows to 2 min)
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.service_config", SERVICE_CONFIG),
                # A server that stops answering (stopped, or gone without a word: a machine off, a network cut)
                # fails every call under way once a ping goes unanswered, within PFS_READ_TIMEOUT: calls that change
                # something and waits (flush-commit) too, which no deadline can bound. A working server answers a
                # ping at once, however long its call takes; an idle connection is not pinged.
                ("grpc.keepalive_time_ms", ping_ms),
                ("grpc.keepalive_timeout_ms", ping_ms),
                ("grpc.http2.ping_timeout_ms", ping_ms),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        self._api = pfs_pb2_grpc.APIStub(self._channel)
        self._chunks = chunks_pb2_grpc.ChunksStub(self._channel)
        self._pps = pps_pb2_grpc.PPSStub(self._channel)
        self._auth = auth_pb2_grpc.AuthStub(self._channel)
        # PutChunks sends frames encoded straight into its messages (cv.chunk_batch_bytes), not through ChunkBatch
        self._put_chunks = self._channel.stream_unary(
            f"/{cpb.DESCRIPTOR.services_by_name['Chunks'].full_name}/PutChunks",
            request_serializer=cv.chunk_batch_bytes, response_deserializer=cpb.PutChunksResponse.FromString)
        self._pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="pfs-client")
        self._stalls = StallWatch(limit, self.address)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable, request, **kwargs):
        try:
            return method(request, **kwargs)
        except grpc.RpcError as err:
            raise self.translate(err) from None

    def _look(self, method: Callable, request):
        """A call that changes nothing and that a working server answers at once (a lookup), given up once it has
        waited PFS_READ_TIMEOUT, as a stalled stream is: a mount's listing would otherwise leave its caller
        waiting for ever, unkillable, on a server that hangs."""
        return self._call(method, request, timeout=self._stalls.limit)

    def _stream(self, method: Callable, request, watched: bool = False) -> Iterator:
        """The messages of a streaming call; WATCHED: given up if the server stalls (StallWatch)."""
        try:
            call = method(request)
            yield from self._stalls.messages(call) if watched else call
        except grpc.RpcError as err:
            raise self.translate(err) from None

    # -- server

    @functools.cached_property
    def _info(self) -> pb.ServerInfo:
        return self._look(self._api.Info, pb.Empty())

    @property
    def server_version(self) -> str:
        return self._info.version

    @property
    def chunk_avg_size(self) -> int:
        return self._info.chunk_avg_size

    @property
    def direct_read(self) -> DirectRead | None:
        """How the server offers its chunks to be read without it (a store on its machine), if it does."""
        return cv.direct_read_from_pb(self._info)

    # -- repos

    def create_repo(self, name: str, description: str = "") -> RepoInfo:
        return cv.repo_from_pb(self._call(self._api.CreateRepo, pb.CreateRepoRequest(name=name, description=description)))

    def inspect_repo(self, name: str) -> RepoInfo:
        return cv.repo_from_pb(self._look(self._api.InspectRepo, pb.RepoRequest(name=name)))

    def list_repos(self) -> list[RepoInfo]:
        return [cv.repo_from_pb(r) for r in self._look(self._api.ListRepo, pb.Empty()).repos]

    def delete_repo(self, name: str, force: bool = False) -> None:
        self._call(self._api.DeleteRepo, pb.RepoRequest(name=name, force=force))

    # -- commits

    def start_commit(
        self, repo: str, branch: str = "", parent: str = "", provenance: Iterable[CommitRef] = (), wait: float = 0,
        one_off: bool = False, description: str = "",
    ) -> CommitInfo:
        """A new open commit; where the branch has one open already (Conflict), tried again for up to WAIT
        seconds, so that writers of one branch take turns (through any server of a cluster). ONE_OFF: started by a
        write for itself (see CommitInfo.one_off)."""
        request = pb.StartCommitRequest(
            repo=repo, branch=branch, parent=parent, provenance=[cv.commit_ref_to_pb(p) for p in provenance],
            one_off=one_off, description=description,
        )
        deadline, pause = time.monotonic() + wait, TURN_POLL
        while True:
            try:
                return cv.commit_from_pb(self._call(self._api.StartCommit, request))
            except Conflict as err:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise (Conflict(f"{err}; waited {wait:g} s for it") if wait else err) from None
                time.sleep(min(left, random.uniform(pause / 2, pause)))  # jittered: waiters do not call at once
                pause = min(pause * 2, MAX_TURN_POLL)

    def finish_commit(self, ref: CommitRef, description: str = "") -> CommitInfo:
        """Finishes REF, with DESCRIPTION in place of the one it has ('': it keeps its own)."""
        request = pb.FinishCommitRequest(repo=ref.repo, ref=ref.ref, description=description)
        return cv.commit_from_pb(self._call(self._api.FinishCommit, request))

    def inspect_commit(self, ref: CommitRef) -> CommitInfo:
        return cv.commit_from_pb(self._look(self._api.InspectCommit, cv.commit_ref_to_pb(ref)))

    def list_commits(self, repo: str, branch: str = "", limit: int = 0) -> list[CommitInfo]:
        request = pb.ListCommitRequest(repo=repo, branch=branch, limit=limit)
        return [cv.commit_from_pb(c) for c in self._look(self._api.ListCommit, request).commits]

    def delete_commit(self, ref: CommitRef) -> None:
        self._call(self._api.DeleteCommit, cv.commit_ref_to_pb(ref))

    def subscribe_commits(self, repo: str, branch: str, new_only: bool = False) -> Iterator[CommitInfo]:
        request = pb.SubscribeCommitRequest(repo=repo, branch=branch, new_only=new_only)
        for m in self._stream(self._api.SubscribeCommit, request):
            yield cv.commit_from_pb(m)

    # -- branches

    def list_branches(self, repo: str) -> list[BranchInfo]:
        return [cv.branch_from_pb(b) for b in self._look(self._api.ListBranch, pb.RepoRequest(name=repo)).branches]

    def set_branch(self, ref: CommitRef, branch: str) -> BranchInfo:
        request = pb.SetBranchRequest(commit=cv.commit_ref_to_pb(ref), branch=branch)
        return cv.branch_from_pb(self._call(self._api.SetBranch, request))

    def delete_branch(self, repo: str, branch: str, force: bool = False) -> None:
        self._call(self._api.DeleteBranch, pb.DeleteBranchRequest(repo=repo, branch=branch, force=force))

    # -- files

    def put_files(self, ref: CommitRef, writes: Iterable[FileWrite]) -> None:
        """Records files whose chunks the server holds (see pfs.client.upload for the whole path)."""
        request = pb.PutFilesRequest(commit=cv.commit_ref_to_pb(ref))
        cv.add_writes(request.files, writes)
        self._call(self._api.PutFiles, request)

    def inspect_file(self, ref: CommitRef, path: str) -> FileInfo:
        request = pb.FileRequest(commit=cv.commit_ref_to_pb(ref), path=path)
        return cv.file_from_pb(self._look(self._api.InspectFile, request))

    def list_files(self, ref: CommitRef, path: str = "", with_chunks: bool = False, since: str = "",
                   incremental: str = "diff", recursive: bool = False, limit: int = 0) -> Iterator[FileInfo]:
        """A directory's entries; with SINCE, only what changed after that commit.

        RECURSIVE: every entry below it, LIMIT at most (see FileRequest in protos/pfs.proto).
        """
        request = pb.FileRequest(commit=cv.commit_ref_to_pb(ref), path=path, with_chunks=with_chunks, since=since,
                                 incremental=incremental, recursive=recursive, limit=limit)
        for batch in self._stream(self._api.ListFile, request, watched=True):
            for m in batch.files:
                yield cv.file_from_pb(m)

    def delete_file(self, ref: CommitRef, path: str) -> None:
        self._call(self._api.DeleteFile, pb.FileRequest(commit=cv.commit_ref_to_pb(ref), path=path))

    # -- the store as a whole (the cluster's root)

    def garbage_collect(self, dry_run: bool = False,
                        grace: float | None = None) -> Iterator[Progress | GarbageCollected]:
        """Progress, then what was freed (GRACE: see GarbageCollectRequest in protos/pfs.proto)."""
        request = pb.GarbageCollectRequest(dry_run=dry_run, **({} if grace is None else {"grace": grace}))
        for m in self._stream(self._api.GarbageCollect, request):
            yield cv.update_from_pb(m)

    def check(self, read_data: bool = False) -> Iterator[Progress | CheckProblem | CheckSummary]:
        """Progress, each problem found, then the summary."""
        for m in self._stream(self._api.Check, pb.CheckRequest(read_data=read_data)):
            yield cv.update_from_pb(m)

    # -- pipelines

    def create_pipeline(self, spec: PipelineSpec, update: bool = False, reprocess: bool = False) -> PipelineInfo:
        request = ppb.CreatePipelineRequest(spec=cv.pipeline_spec_to_pb(spec), update=update, reprocess=reprocess)
        return cv.pipeline_from_pb(self._call(self._pps.CreatePipeline, request))

    def inspect_pipeline(self, name: str) -> PipelineInfo:
        return cv.pipeline_from_pb(self._look(self._pps.InspectPipeline, ppb.PipelineRequest(name=name)))

    def list_pipelines(self) -> list[PipelineInfo]:
        return [cv.pipeline_from_pb(p) for p in self._look(self._pps.ListPipeline, pb.Empty()).pipelines]

    def delete_pipeline(self, name: str) -> None:
        self._call(self._pps.DeletePipeline, ppb.PipelineRequest(name=name))

    def stop_pipeline(self, name: str) -> PipelineInfo:
        return cv.pipeline_from_pb(self._call(self._pps.StopPipeline, ppb.PipelineRequest(name=name)))

    def start_pipeline(self, name: str) -> PipelineInfo:
        return cv.pipeline_from_pb(self._call(self._pps.StartPipeline, ppb.PipelineRequest(name=name)))

    def flush_commit(self, ref: CommitRef) -> list[JobInfo]:
        """Waits until every job downstream of the commit is done; those jobs, upstream first."""
        return [cv.job_from_pb(j) for j in self._call(self._pps.FlushCommit, cv.commit_ref_to_pb(ref)).jobs]

    @property
    def runner(self) -> str:
        """How the server runs pipeline workers (local or container)."""
        return self._info.runner

    @property
    def registry(self) -> str:
        """The registry the server was started with (host:port), or ''."""
        return self._info.registry

    # -- jobs

    def create_job(self, spec: JobSpec) -> JobInfo:
        return cv.job_from_pb(self._call(self._pps.CreateJob, cv.job_spec_to_pb(spec)))

    def inspect_job(self, job_id: str) -> JobInfo:
        return cv.job_from_pb(self._look(self._pps.InspectJob, ppb.JobRequest(id=job_id)))

    def stop_job(self, job_id: str) -> JobInfo:
        return cv.job_from_pb(self._call(self._pps.StopJob, ppb.JobRequest(id=job_id)))

    def whoami(self) -> tuple[str, float]:
        """Whom the token this client shows stands for, and when it expires (0: never)."""
        me = self._call(self._auth.WhoAmI, apb.WhoAmIRequest())
        return me.subject, me.expires

    def create_token(self, subject: str, ttl: float = 0.0) -> tuple[str, float]:
        """A new token for SUBJECT lasting TTL seconds (0: until revoked), and when it expires (the root's call)."""
        made = self._call(self._auth.CreateToken, apb.CreateTokenRequest(subject=subject, ttl=ttl))
        return made.token, made.expires

    def revoke(self, subject: str = "", token: str = "") -> int:
        """Revokes every token of SUBJECT, or TOKEN; how many (the root's call)."""
        return self._call(self._auth.Revoke, apb.RevokeRequest(subject=subject, token=token)).revoked

    def set_role(self, repo: str, subject: str, role: str) -> dict[str, str]:
        """Gives SUBJECT ROLE on REPO (none: takes it away); the roles on REPO now (its owner's call)."""
        roles = self._call(self._auth.SetRole, apb.SetRoleRequest(repo=repo, subject=subject, role=role))
        return {r.subject: r.role for r in roles.roles}

    def get_roles(self, repo: str) -> dict[str, str]:
        """The subjects with a role on REPO, and their roles."""
        return {r.subject: r.role for r in self._call(self._auth.GetRoles, apb.RolesRequest(repo=repo)).roles}

    def list_jobs(self, pipeline: str = "") -> list[JobInfo]:
        return [cv.job_from_pb(j) for j in self._look(self._pps.ListJob, ppb.ListJobRequest(pipeline=pipeline)).jobs]

    def start_shard(self, job_id: str, shard: int, attempt: int = 0) -> JobInfo:
        """Takes shard SHARD of a job: a new try at it, or try ATTEMPT that a controller started this worker for;
        the job says what to run and on what."""
        request = ppb.ShardRequest(job=job_id, shard=shard, attempt=attempt)
        return cv.job_from_pb(self._call(self._pps.StartShard, request))

    def put_shard_files(self, job_id: str, shard: int, attempt: int, writes: Iterable[FileWrite]) -> None:
        request = ppb.ShardFiles(job=job_id, shard=shard, attempt=attempt)
        cv.add_writes(request.files, writes)
        self._call(self._pps.PutShardFiles, request)

    def finish_shard(self, job_id: str, attempt: int, result: ShardInfo) -> JobInfo:
        """Reports how a shard ended: success when RESULT.error is empty."""
        request = ppb.ShardResult(
            job=job_id, shard=result.index, attempt=attempt, exit_code=result.exit_code, error=result.error,
            bytes_in=result.bytes_in, bytes_out=result.bytes_out, bytes_sent=result.bytes_sent,
            mounted=result.mounted, uploaded=result.uploaded)
        return cv.job_from_pb(self._call(self._pps.FinishShard, request))

    def put_logs(self, lines: Iterable[LogLine]) -> None:
        self._call(self._pps.PutLogs, ppb.LogLines(lines=[cv.log_to_pb(x) for x in lines]))

    def get_logs(self, job_id: str = "", pipeline: str = "", follow: bool = False, tail: int = 0) -> Iterator[LogLine]:
        """The log lines of a job, or of every job of a pipeline (the last TAIL, where it is given); FOLLOW: then each
        line added, until the job has ended (a pipeline's: for ever)."""
        request = ppb.LogRequest(job=job_id, pipeline=pipeline, follow=follow, tail=tail)
        for batch in self._stream(self._pps.GetLogs, request):
            for m in batch.lines:
                yield cv.log_from_pb(m)

    # -- chunks

    def missing_chunks(self, addresses: list[bytes]) -> list[bytes]:
        return self.missing_chunks_async(addresses).result()

    def missing_chunks_async(self, addresses: list[bytes]) -> Future:
        """Starts asking which of ADDRESSES the server lacks (a lookup, see _look): a future of those it lacks, so
        an upload asks about a batch while it sends the one before."""
        asked: Future = Future()

        def answered(call: grpc.Future) -> None:
            try:
                asked.set_result(list(call.result().addresses))
            except grpc.RpcError as err:
                asked.set_exception(self.translate(err))

        call = self._chunks.MissingChunks.future(cpb.ChunkAddresses(addresses=addresses), timeout=self._stalls.limit)
        call.add_done_callback(answered)
        return asked

    def put_chunks_async(self, batches: Iterator[list[tuple[bytes, bytes]]]) -> "grpc.Future":
        """Starts streaming batches of (address, zstd frame) pairs; the future's result is how many were new."""
        return self._put_chunks.future(batches)

    def read_chunks(self, chunks: Iterable[ChunkRef]) -> Iterator[bytes]:
        """The plain bytes of CHUNKS in order, each checked (frames.check_ref, frames.unpack)."""
        chunks = list(chunks)
        for c in chunks:
            frames.check_ref(c)
        request = cpb.ChunkAddresses(addresses=[c.address for c in chunks])
        window: deque = deque()
        refs = iter(chunks)  # the server answers each address asked for, in order
        for batch in self._stream(self._chunks.GetChunks, request, watched=True):
            for m in batch.chunks:
                ref = next(refs)
                if len(m.compressed) < INLINE_FRAME:
                    window.append(_done(frames.unpack, ref, m.compressed))
                else:
                    window.append(self._pool.submit(frames.unpack, ref, m.compressed))
                if len(window) > READ_AHEAD:
                    yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def locate_chunks(self, chunks: Iterable[ChunkRef | bytes]) -> list[ChunkLocation | None]:
        """Where each of CHUNKS (refs or addresses) may be fetched without the server, in order (None: the store
        lacks it); FailedPrecondition from a server whose store gives no locations (see DirectRead)."""
        addresses = [c.address if isinstance(c, ChunkRef) else c for c in chunks]
        out: list[ChunkLocation | None] = []
        for i in range(0, len(addresses), MAX_LOCATE):
            request = cpb.ChunkAddresses(addresses=addresses[i : i + MAX_LOCATE])
            out.extend(cv.location_from_pb(m) for m in self._look(self._chunks.LocateChunks, request).locations)
        return out

    def read_file(self, ref: CommitRef, path: str) -> Iterator[bytes]:
        """The contents of a file, chunk by chunk."""
        return self.read_chunks(self.inspect_file(ref, path).chunks)

    def submit(self, fn: Callable, *args) -> Future:
        """Runs FN on the client's worker threads (shared by uploads and reads)."""
        return self._pool.submit(fn, *args)

    def translate(self, err: grpc.RpcError) -> Exception:
        """The domain error a failed call stands for; a stalled server's own (see StallWatch.stalled) where the call
        ran out of a lookup's deadline (_look: no other call has one) or of a ping's answer (see __init__)."""
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED or (
                err.code() == grpc.StatusCode.UNAVAILABLE and any(s in (err.details() or "") for s in UNANSWERED)):
            return self._stalls.stalled("call")
        return domain_error(err, self.address)


def _done(fn: Callable, *args) -> Future:
    """The future of FN(*ARGS), called now: its result, or its error raised where the future's is asked for."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as err:
        future.set_exception(err)
    return future

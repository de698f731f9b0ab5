"""Who may call what: one rule for every RPC, checked once its request is decoded and before its servicer runs.

A rule asks for a role on the repo the request names (server/roles.py), or for the cluster's root, or for no
more than a valid token (which server/rpc/auth.py has checked already). A pipeline is its output repo's: anyone
may make one from inputs they may read (server/pps/pipelines.py checks those), its readers see it, its owner
changes it; its jobs and their logs show to whoever may read their output (the servicer filters them). A
worker's calls for its own job take that job's token (server/pps/job_tokens.py), which reads only the job's
own commits. Chunks are anyone's, since a chunk is named by the hash of its bytes and belongs to no repo: its
address is what a repo's reader learns, and it gives no more than those bytes. An RPC without a rule is refused:
tests/test_roles.py checks that every RPC of the service definitions has one.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from pfs.core.errors import PermissionDenied, PfsError
from server.meta import StoredToken
from server.pps.job_tokens import PREFIX, JobReads, subject_of
from server.roles import OWNER, READER, WRITER, Roles
from server.rpc.auth import caller
from server.rpc.handlers import around
from server.rpc.status import abort
from server.tokens import ROOT, Tokens

log = logging.getLogger(__name__)

ANY = "any"  # any valid token
JOB = "job"  # the token of the job the request names (server/pps/job_tokens.py), or the root


@dataclass(frozen=True)
class Rule:
    need: str  # ANY, ROOT, JOB (its workers' token), or the role on the repo REPO names
    repo: Callable[[object], str] | None = None  # the repo a request names
    what: str = ""  # what a refusal says the caller may not do (to the repo)
    jobs: Callable[[object], set[str]] | None = None  # the jobs a worker's request reports for
    reads: Callable[[object], list[tuple[str, str]]] | None = None  # the commits (repo, ref) a READER request reads
    for_jobs: bool = False  # ANY: a job's token may call it too
    cites: Callable[[object], list[str]] | None = None  # other repos the request names, which the caller must read

    def check(self, roles: Roles, job_reads: JobReads, who: StoredToken, request: object, method: str) -> None:
        call = method.rsplit("/", 1)[-1]
        if self.need == ROOT and who.subject != ROOT:
            raise PermissionDenied(f"only the cluster's root may call {call}; {who.subject}'s token may not")
        if self.need == JOB and who.subject != ROOT:
            wrong = sorted(j for j in self.jobs(request) if subject_of(j) != who.subject)
            if wrong or not who.subject.startswith(PREFIX):
                job = f" for job {wrong[0][:40]!r}" if wrong else ""
                raise PermissionDenied(f"{who.subject} may not call {call}{job}: only a job's own workers may")
        if who.subject.startswith(PREFIX) and self.need != JOB:
            if self.reads is not None:
                job_reads.check(who.subject, self.reads(request))
            elif not self.for_jobs:
                raise PermissionDenied(f"{who.subject} may not call {call}: a job's token reads its job's commits "
                                       "and reports for it, nothing else")
        elif self.repo is not None:
            roles.check(who.subject, self.repo(request), self.need, self.what)
            for repo in self.cites(request) if self.cites else ():
                roles.check(who.subject, repo, READER, "name commits of")


def _name(request) -> str:
    return request.name


def _repo(request) -> str:
    return request.repo


def _commit(request) -> str:
    return request.commit.repo


def _provenance(request) -> list[str]:
    return [p.repo for p in request.provenance]


def _reads_commit(request) -> list[tuple[str, str]]:
    return [(request.repo, request.ref)]


def _reads_file(request) -> list[tuple[str, str]]:
    commit = request.commit
    return [(commit.repo, commit.ref)] + ([(commit.repo, request.since)] if request.since else [])


def _job(request) -> set[str]:
    return {request.job}


def _log_jobs(request) -> set[str]:
    return {line.job for line in request.lines}


RULES = {
    "/pfs.API/Info": Rule(ANY, for_jobs=True),
    "/pfs.API/CreateRepo": Rule(ANY),  # its creator owns it
    "/pfs.API/InspectRepo": Rule(READER, _name, "read"),
    "/pfs.API/ListRepo": Rule(ANY),  # the repos the caller may read
    "/pfs.API/DeleteRepo": Rule(OWNER, _name, "delete"),
    "/pfs.API/StartCommit": Rule(WRITER, _repo, "commit to", cites=_provenance),
    "/pfs.API/FinishCommit": Rule(WRITER, _repo, "commit to"),
    "/pfs.API/InspectCommit": Rule(READER, _repo, "read", reads=_reads_commit),
    "/pfs.API/ListCommit": Rule(READER, _repo, "read"),
    "/pfs.API/DeleteCommit": Rule(WRITER, _repo, "delete commits of"),
    "/pfs.API/SubscribeCommit": Rule(READER, _repo, "read"),
    "/pfs.API/ListBranch": Rule(READER, _name, "read"),
    "/pfs.API/SetBranch": Rule(WRITER, _commit, "move branches of"),
    "/pfs.API/DeleteBranch": Rule(WRITER, _repo, "delete branches of"),
    "/pfs.API/PutFiles": Rule(WRITER, _commit, "write to"),
    "/pfs.API/InspectFile": Rule(READER, _commit, "read", reads=_reads_file),
    "/pfs.API/ListFile": Rule(READER, _commit, "read", reads=_reads_file),
    "/pfs.API/DeleteFile": Rule(WRITER, _commit, "write to"),
    "/pfs.API/GarbageCollect": Rule(ROOT),  # it sees every repo, and deletes
    "/pfs.API/Check": Rule(ROOT),  # it names every repo's paths
    **{f"/pfs.Chunks/{m}": Rule(ANY, for_jobs=True) for m in (
        "MissingChunks", "PutChunks", "GetChunks", "LocateChunks")},
    "/pps.PPS/CreatePipeline": Rule(ANY),  # from inputs its creator may read, into an output repo they own
    "/pps.PPS/InspectPipeline": Rule(READER, _name, "read"),
    "/pps.PPS/ListPipeline": Rule(ANY),  # the pipelines whose output the caller may read
    **{f"/pps.PPS/{m}": Rule(OWNER, _name, "change the pipeline of") for m in (
        "DeletePipeline", "StopPipeline", "StartPipeline")},
    "/pps.PPS/CreateJob": Rule(ROOT),
    **{f"/pps.PPS/{m}": Rule(ANY) for m in ("InspectJob", "ListJob", "GetLogs")},  # those whose output it may read
    "/pps.PPS/StopJob": Rule(ANY),  # the owner of its output repo (the servicer looks the job up)
    **{f"/pps.PPS/{m}": Rule(JOB, jobs=_job) for m in ("StartShard", "PutShardFiles", "FinishShard")},
    "/pps.PPS/PutLogs": Rule(JOB, jobs=_log_jobs),
    "/pps.PPS/FlushCommit": Rule(READER, _repo, "read"),
    "/auth.Auth/WhoAmI": Rule(ANY, for_jobs=True),
    "/auth.Auth/CreateToken": Rule(ROOT),
    "/auth.Auth/Revoke": Rule(ROOT),
    "/auth.Auth/SetRole": Rule(OWNER, _repo, "give roles on"),
    "/auth.Auth/GetRoles": Rule(READER, _repo, "read"),
}


class Authorize(grpc.aio.ServerInterceptor):
    """Runs each method's rule before its servicer; a refusal is PERMISSION_DENIED in one line."""

    def __init__(self, tokens: Tokens, roles: Roles, job_reads: JobReads) -> None:
        self._tokens = tokens
        self._roles = roles
        self._job_reads = job_reads
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method not in self._handlers:
            handler = await continuation(handler_call_details)
            self._handlers[method] = None if handler is None else around(handler, self._checking(method))
        return self._handlers[method]

    def _checking(self, method: str):
        rule = RULES.get(method)

        @asynccontextmanager
        async def checked(request, context: grpc.aio.ServicerContext) -> AsyncIterator:
            try:
                if rule is None:
                    raise PermissionDenied(f"{method} has no rule of who may call it, so nobody may")
                who = caller(self._tokens, context.invocation_metadata())
                check = (self._roles, self._job_reads, who, request, method)
                if who.subject.startswith(PREFIX):  # may look a job and a commit up in the store
                    await asyncio.to_thread(rule.check, *check)
                else:
                    rule.check(*check)
            except PfsError as err:  # refused; or the token expired since server/rpc/auth.py passed it
                log.warning("refused %s from %s: %s", method, context.peer(), err)
                await abort(context, err)
            yield request

        return checked

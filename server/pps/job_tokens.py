"""A job's token: what its workers show the cluster instead of their server's own (root) token.

It stands for the subject job:ID and holds no role. It may read the job's own commits (JobReads): its input
commits, the earlier commits they are compared with (an incremental input's since) and the previous output (a
worker's /pfs/prev); make the calls of its own job's workers (server/rpc/rules.py); and read and write chunks,
nothing else. It is revoked once the job has ended; TTL is the net under a job whose controller died, after
which it expires anyway. A controller that takes a job over makes a token of its own for it. A job is made only
while its pipeline's creator may read each of its inputs (check_creator).
"""

import threading
from collections import OrderedDict

from pfs.core.errors import NotFound, PermissionDenied, PfsError
from pfs.core.model import CommitRef, JobInfo, PipelineInfo
from server.roles import READER, Roles
from server.store import Store
from server.tokens import Tokens

PREFIX = "job:"
TTL = 7 * 86400.0  # seconds
MAX_JOBS = 1000  # jobs whose commits JobReads keeps


def subject_of(job_id: str) -> str:
    return PREFIX + job_id


class JobTokens:
    def __init__(self, tokens: Tokens, roles: Roles) -> None:
        self.tokens = tokens
        self.roles = roles
        self._made: dict[str, str] = {}  # job id -> the token this server made for it

    def check_creator(self, pipeline: PipelineInfo) -> None:
        """PermissionDenied, in one line, while the creator of PIPELINE may not read one of its inputs."""
        for i in pipeline.spec.inputs if pipeline.creator else ():
            self.roles.check(pipeline.creator, i.repo, READER, "read")

    def token(self, job: JobInfo) -> str:
        """JOB's token (made the first time it is asked for)."""
        if job.id not in self._made:
            self._made[job.id], _ = self.tokens.create(subject_of(job.id), TTL)
        return self._made[job.id]

    def held(self) -> list[str]:
        """The jobs this server made tokens for that it has not seen end."""
        return list(self._made)

    def ended(self, job: JobInfo) -> None:
        """Revokes every token of JOB (this server's and any another made)."""
        try:
            self.tokens.revoke(subject_of(job.id), "")
        except NotFound:  # revoked already, by the server that saw the job end first
            pass
        self._made.pop(job.id, None)


class JobReads:
    """The commits a job's token may read, by commit, not by repo: a job sees no other commit of its inputs.
    A job's commits never change, so each job's are looked up once (the newest MAX_JOBS kept)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._commits: OrderedDict[str, frozenset[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, subject: str, reads: list[tuple[str, str]]) -> None:
        """PermissionDenied, in one line, unless job token SUBJECT may read each (repo, ref) of READS."""
        commits = self._of(subject.removeprefix(PREFIX))
        for repo, ref in reads:
            if (repo, ref) not in commits and (repo, self._resolved(repo, ref)) not in commits:
                raise PermissionDenied(f"{subject} may not read {repo}@{ref[:64]}: a job's token reads only its "
                                       "job's input commits and its previous output")

    def _of(self, job_id: str) -> frozenset[tuple[str, str]]:
        with self._lock:
            if job_id in self._commits:
                self._commits.move_to_end(job_id)
                return self._commits[job_id]
        with self._store.meta.transaction() as tx:
            job = tx.get_job(job_id)
        if job is None:  # its token outlived it
            raise PermissionDenied(f"job {job_id[:40]!r} is not known: its token reads nothing")
        commits = frozenset({(i.repo, i.commit) for i in job.inputs} | {(i.repo, i.since) for i in job.inputs
                                                                        if i.since}
                            | ({(job.output_repo, job.prev_output)} if job.prev_output else set()))
        with self._lock:
            self._commits[job_id] = commits
            while len(self._commits) > MAX_JOBS:
                self._commits.popitem(last=False)
        return commits

    def _resolved(self, repo: str, ref: str) -> str:
        """The id of the commit REF names in REPO (a branch, a relative ref), or '' where there is none."""
        try:
            return self._store.inspect_commit(CommitRef(repo, ref)).id if ref else ""
        except PfsError:
            return ""

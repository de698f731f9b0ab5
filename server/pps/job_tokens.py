"""A job's token: what its workers show the cluster instead of their server's own (root) token.

It stands for the subject job:ID. It may read the job's input repos and its output repo (a worker mounts the
previous output), and make the calls of its own job's workers (server/rpc/rules.py), nothing else. It is revoked,
and its roles taken away, once the job has ended; TTL is the net under a job whose controller died, after which
it expires anyway. A controller that takes a job over makes a token of its own for it.
"""

from pfs.core.errors import NotFound
from pfs.core.model import JobInfo
from server.roles import NONE, READER, Roles
from server.tokens import Tokens

PREFIX = "job:"
TTL = 7 * 86400.0  # seconds


def subject_of(job_id: str) -> str:
    return PREFIX + job_id


class JobTokens:
    def __init__(self, tokens: Tokens, roles: Roles) -> None:
        self.tokens = tokens
        self.roles = roles
        self._made: dict[str, str] = {}  # job id -> the token this server made for it

    def token(self, job: JobInfo) -> str:
        """JOB's token (made, with its roles, the first time it is asked for)."""
        if job.id not in self._made:
            subject = subject_of(job.id)
            for repo in _repos(job):
                self.roles.set(repo, subject, READER)
            self._made[job.id], _ = self.tokens.create(subject, TTL)
        return self._made[job.id]

    def held(self) -> list[str]:
        """The jobs this server made tokens for that it has not seen end."""
        return list(self._made)

    def ended(self, job: JobInfo) -> None:
        """Revokes every token of JOB (this server's and any another made) and takes its roles away."""
        subject = subject_of(job.id)
        try:
            self.tokens.revoke(subject, "")
        except NotFound:  # revoked already, by the server that saw the job end first
            pass
        for repo in _repos(job):
            try:
                self.roles.set(repo, subject, NONE)
            except NotFound:
                pass
        self._made.pop(job.id, None)


def _repos(job: JobInfo) -> set[str]:
    return {i.repo for i in job.inputs} | {job.output_repo}

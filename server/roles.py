"""Roles per repo: what each subject (whom a token stands for) may do with a repo.

reader: list it, read its commits, branches and files (get-file, mount); writer: that, and make commits, put and
delete files, move branches; owner: that, and delete the repo and give roles on it. Whoever creates a repo owns
it. The cluster's root (server/tokens.py) may do everything, with no role. Roles are kept in the metadata store
and checked against this server's copy of them (server/mirror.py), so a check costs no transaction and a role
given on another server counts here within a second.
"""

from pfs.core import names
from pfs.core.errors import InvalidArgument, PermissionDenied
from server.meta import MetaStore
from server.mirror import Mirror
from server.tokens import ROOT, check_subject

READER, WRITER, OWNER = "reader", "writer", "owner"
RANK = {READER: 1, WRITER: 2, OWNER: 3}
NONE = "none"  # set-role's word for taking a role away


class Roles:
    def __init__(self, meta: MetaStore) -> None:
        self.meta = meta
        self._roles = Mirror(self._load, "roles")

    def close(self) -> None:
        self._roles.close()

    def role(self, subject: str, repo: str) -> str:
        """SUBJECT's role on REPO ('' for none)."""
        return self._roles.value.get((repo, subject), "")

    def allows(self, subject: str, repo: str, need: str) -> bool:
        return subject == ROOT or RANK.get(self.role(subject, repo), 0) >= RANK[need]

    def check(self, subject: str, repo: str, need: str, what: str) -> None:
        """PermissionDenied, in one line, unless SUBJECT may WHAT (a verb) on REPO, which takes the role NEED."""
        if not self.allows(subject, repo, need):
            has = self.role(subject, repo) or "no role"
            repo = repo[:names.MAX_NAME + 1]  # a name no repo has, of megabytes, is not said (nor logged) whole
            raise PermissionDenied(f"{subject} may not {what} repo {repo!r}: that takes {need}, and {subject} has "
                                   f"{has} there (its owner gives it: pfs auth set-role {repo} {subject} {need})")

    def set(self, repo: str, subject: str, role: str) -> None:
        """Gives SUBJECT ROLE on REPO (NONE takes it away)."""
        if role != NONE and role not in RANK:
            raise InvalidArgument(f"role {role[:40]!r} is unknown; give one of {', '.join(RANK)}, or {NONE}")
        if subject == ROOT:
            raise InvalidArgument(f"{ROOT!r} may do everything with every repo; it takes no role")
        check_subject(subject)
        with self.meta.transaction() as tx:
            tx.set_role(repo, subject, "" if role == NONE else role)
        self._roles.reload()

    def of(self, repo: str) -> dict[str, str]:
        """The subjects with a role on REPO, and their roles."""
        return {subject: role for (r, subject), role in self._roles.value.items() if r == repo}

    def _load(self) -> dict[tuple[str, str], str]:
        with self.meta.transaction() as tx:
            return {(repo, subject): role for repo, subject, role in tx.roles()}

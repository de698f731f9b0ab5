"""Metadata stores: repos, commits, branches, the content-addressed file/tree objects, jobs, and where an object
store keeps each chunk.

One interface, used only inside a transaction, so every store operation is
atomic. Backends: sqlite.py (the embedded default) and postgres.py (--meta), both
over the SQL in sql.py. Each passes tests/test_meta_store.py.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from pfs.core.model import CommitInfo, FileWrite, JobInfo, LogLine, PipelineInfo, RepoInfo, ShardInfo


@dataclass(frozen=True)
class StoredCommit:
    info: CommitInfo
    tree: bytes | None  # address of the root tree object; None for an empty commit


@dataclass(frozen=True)
class StoredChunk:
    """Where an object store keeps a chunk: LENGTH bytes from OFFSET of the object PACK, a pack of small chunks
    ("" : the chunk's own object, named by its address). HEAD is its frame's first bytes (what its header says:
    its plain size), CHECKSUM the xxh3-64 of the frame, so a corrupt or truncated object is never served."""

    address: bytes
    pack: str
    offset: int
    length: int
    head: bytes
    checksum: bytes


@dataclass(frozen=True)
class StoredToken:
    """A token by its SHA-256 (never the token itself): the SUBJECT it stands for, when it was made, when it expires
    and when it was revoked (0: never), and for a server's own token, that SERVER's id."""

    hash: bytes
    subject: str
    created: float
    expires: float = 0.0
    revoked: float = 0.0
    server: str = ""  # the server whose own (root) token it is ('' : a token made for someone)


class Tx(ABC):
    """The operations of one transaction."""

    @abstractmethod
    def insert_repo(self, repo: RepoInfo) -> None: ...

    @abstractmethod
    def get_repo(self, name: str) -> RepoInfo | None: ...

    @abstractmethod
    def has_repo(self, name: str) -> bool:
        """Whether repo NAME is there: what get_repo finds, without its size and branches (which cost a query over
        every branch, where a repo has thousands)."""

    @abstractmethod
    def list_repos(self) -> list[RepoInfo]: ...

    @abstractmethod
    def delete_repo(self, name: str) -> None:
        """Deletes the repo with its commits and branches."""

    @abstractmethod
    def insert_commit(self, commit: StoredCommit) -> None: ...

    @abstractmethod
    def get_commit(self, repo: str, commit_id: str) -> StoredCommit | None: ...

    @abstractmethod
    def update_commit(self, commit: StoredCommit) -> None:
        """Replaces the tree, size and finish time of an existing commit."""

    @abstractmethod
    def list_commits(self, repo: str) -> list[StoredCommit]:
        """Every commit of REPO, newest first."""

    @abstractmethod
    def children(self, repo: str, commit_id: str) -> list[str]: ...

    @abstractmethod
    def delete_commit(self, repo: str, commit_id: str) -> None: ...

    @abstractmethod
    def set_branch(self, repo: str, name: str, head: str) -> None: ...

    @abstractmethod
    def get_branch(self, repo: str, name: str) -> str | None:
        """The head commit id of a branch, or None if there is no such branch."""

    @abstractmethod
    def list_branches(self, repo: str) -> list[tuple[str, str]]:
        """(name, head) pairs, by name."""

    @abstractmethod
    def delete_branch(self, repo: str, name: str) -> None: ...

    @abstractmethod
    def put_object(self, address: bytes, data: bytes) -> None:
        """Stores an immutable object; storing one that exists touches it (server/grace.py), nothing more."""

    @abstractmethod
    def get_object(self, address: bytes) -> bytes | None: ...

    @abstractmethod
    def put_stored_chunks(self, chunks: Sequence[StoredChunk]) -> int:
        """Records where chunks are stored; a chunk recorded already keeps its place. How many were new."""

    @abstractmethod
    def stored_chunks(self, addresses: Sequence[bytes], touch: bool = False) -> dict[bytes, StoredChunk]:
        """Where each of ADDRESSES that is recorded is stored; with TOUCH, each found is touched (server/grace.py)."""

    # -- garbage collection (server/gc.py) and the check (server/check.py)

    @abstractmethod
    def commit_roots(self) -> list[tuple[str, str, bytes]]:
        """(repo, commit id, root tree address) of every commit, open or finished, that holds files."""

    @abstractmethod
    def all_staged_files(self) -> list[FileWrite]:
        """The files staged by every shard of every job."""

    @abstractmethod
    def get_objects(self, addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        """The objects among ADDRESSES that are stored, by address."""

    @abstractmethod
    def object_sizes(self, addresses: Sequence[bytes]) -> dict[bytes, int]:
        """The size in bytes of each object among ADDRESSES that is stored, by address (nothing read but that)."""

    @abstractmethod
    def object_addresses(self, after: bytes, limit: int) -> list[bytes]:
        """Up to LIMIT addresses of stored objects, in order, from the first past AFTER."""

    @abstractmethod
    def delete_objects(self, addresses: Sequence[bytes], cutoff: float, dry_run: bool) -> tuple[int, int]:
        """Deletes (unless DRY_RUN) those objects of ADDRESSES last touched before CUTOFF: how many, how many bytes."""

    @abstractmethod
    def stored_chunk_rows(self, after: bytes, limit: int) -> list[tuple[bytes, str, int, float]]:
        """Up to LIMIT recorded chunks (address, pack, length, when touched), by address, from the first past AFTER."""

    @abstractmethod
    def pack_chunks(self, pack: str) -> list[StoredChunk]:
        """The chunks recorded in PACK."""

    @abstractmethod
    def delete_stored_chunks(self, addresses: Sequence[bytes], cutoff: float, dry_run: bool) -> tuple[int, int]:
        """Forgets (unless DRY_RUN) the recorded chunks of ADDRESSES last touched before CUTOFF: how many, and
        their bytes."""

    @abstractmethod
    def move_stored_chunks(self, chunks: Sequence[StoredChunk], old_pack: str) -> None:
        """Records that CHUNKS, each in OLD_PACK until now, are where they say (a rewritten pack); OLD_PACK is
        retired as of now."""

    @abstractmethod
    def retired_packs(self) -> dict[str, float]:
        """When each retired pack (rewritten; to be deleted once no URL to it is valid) was retired, by pack."""

    @abstractmethod
    def forget_retired(self, packs: Sequence[str]) -> None: ...

    @abstractmethod
    def put_pipeline(self, pipeline: PipelineInfo) -> None:
        """Stores a new pipeline, or the new state of one."""

    @abstractmethod
    def get_pipeline(self, name: str) -> PipelineInfo | None: ...

    @abstractmethod
    def list_pipelines(self) -> list[PipelineInfo]:
        """Pipelines in the order they were created."""

    @abstractmethod
    def delete_pipeline(self, name: str) -> None:
        """Deletes the pipeline and its lease."""

    @abstractmethod
    def beat(self, server: str, address: str, ttl: float) -> None:
        """Records that SERVER, which workers and clients reach at ADDRESS, lives for TTL seconds more (by the
        database's clock, as every expiry here)."""

    @abstractmethod
    def live_servers(self) -> dict[str, str]:
        """The id and address of each server whose last beat has not expired, by id."""

    @abstractmethod
    def claim_lease(self, pipeline: str, server: str, ttl: float) -> bool:
        """Gives SERVER the lease of PIPELINE's controller for TTL seconds, unless another server holds it (one
        that has not expired); whether SERVER holds it now. A holder renews its lease the same way."""

    @abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Gives the lease NAME up, if HOLDER holds it."""

    @abstractmethod
    def leases(self) -> dict[str, str]:
        """The holder of each pipeline's lease that has not expired, by pipeline."""

    @abstractmethod
    def drop_server(self, server: str) -> None:
        """Forgets SERVER (it stopped): its beat and its leases go, so that others take its pipelines now."""

    @abstractmethod
    def put_token(self, token: StoredToken) -> None:
        """Records a token; one recorded already (its hash) keeps its record."""

    @abstractmethod
    def tokens(self) -> list[StoredToken]:
        """Every token recorded, revoked and expired ones too."""

    @abstractmethod
    def retire_server_tokens(self, server: str, keep: bytes, when: float) -> int:
        """Revokes, as of WHEN, SERVER's own tokens but the one whose hash is KEEP (its token file was replaced);
        how many were."""

    @abstractmethod
    def revoke_tokens(self, subject: str, hash: bytes, when: float) -> int:
        """Revokes, as of WHEN, every token of SUBJECT and the token whose hash is HASH; how many were."""

    @abstractmethod
    def forget_tokens(self, before: float) -> int:
        """Deletes the records of the tokens revoked, or expired, before BEFORE; how many."""

    @abstractmethod
    def set_role(self, repo: str, subject: str, role: str) -> None:
        """Gives SUBJECT ROLE on REPO ('' takes it away). A repo's roles go with it."""

    @abstractmethod
    def roles(self) -> list[tuple[str, str, str]]:
        """Every (repo, subject, role)."""

    @abstractmethod
    def put_job(self, job: JobInfo) -> None:
        """Stores a new job, or the new state of one, with its shards."""

    @abstractmethod
    def delete_jobs(self, output_repo: str) -> None:
        """Deletes the jobs that write OUTPUT_REPO, with their shards, staged files and logs."""

    @abstractmethod
    def put_shard(self, job_id: str, shard: ShardInfo) -> None:
        """Stores the new state of one shard of a job (a row of its own: a report rewrites only its shard)."""

    @abstractmethod
    def get_job(self, job_id: str) -> JobInfo | None: ...

    @abstractmethod
    def list_jobs(self, pipeline: str = "") -> list[JobInfo]:
        """Jobs newest first; only PIPELINE's if given."""

    @abstractmethod
    def stage_files(self, job_id: str, shard: int, writes: list[FileWrite]) -> None:
        """Adds files a shard wrote; they wait until the job's output commit is made."""

    @abstractmethod
    def staged_files(self, job_id: str, shard: int) -> list[FileWrite]:
        """The files staged for a shard, in the order they were staged."""

    @abstractmethod
    def clear_staged(self, job_id: str, shard: int) -> None: ...

    @abstractmethod
    def setting(self, name: str, value: str) -> str:
        """The store's setting NAME: VALUE, made so now, unless it was set before."""

    @abstractmethod
    def put_setting(self, name: str, value: str) -> None: ...

    @abstractmethod
    def add_logs(self, lines: list[LogLine], keep: int) -> None:
        """Adds log lines; a shard's log that grows past KEEP (its characters, and a row's cost a line) loses its
        first lines, down to three quarters of KEEP, which a line saying how many went stands for."""

    @abstractmethod
    def logs(self, job_id: str, pipeline: str, after: int, limit: int) -> list[tuple[int, LogLine]]:
        """Log lines of a job, or of every job of a pipeline, in the order they were added: the first LIMIT of
        those after the line numbered AFTER (0: from the first), each with its number."""

    @abstractmethod
    def logs_before_last(self, job_id: str, pipeline: str, count: int) -> int:
        """The number of the line before the last COUNT lines of a job, or of every job of a pipeline (0: there are
        no more than COUNT): what `logs` reads the last COUNT lines after."""


class MetaStore(ABC):
    shared = False  # whether servers on other machines use it too

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises."""

    def notify(self) -> None:
        """Tells the other servers of the store that there is news (a commit finished, a job changed); what it
        cannot tell them they find by looking again later. A store of one server has no one to tell."""

    def listen(self, news: Callable[[], None]) -> None:
        """Calls NEWS (on a thread of the store's) whenever another server notifies; a store of one server never
        does."""

    def reclaim(self) -> None:
        """Gives the disk back the room of what garbage collection deleted, where the database keeps it (SQLite);
        PostgreSQL's autovacuum needs no help."""

    def making_room(self) -> AbstractContextManager[None]:
        """Around a call that deletes data: where the store's disk is full, the room it keeps for deleting (a
        SQLite data dir's disk.Reserve) is given up to it. PostgreSQL keeps its own."""
        return nullcontext()

    @abstractmethod
    def close(self) -> None: ...


def walk_ancestry(tx: Tx, repo: str, commit_id: str) -> Iterator[StoredCommit]:
    """The commit and its ancestors, newest first."""
    while commit_id:
        commit = tx.get_commit(repo, commit_id)
        if commit is None:
            return
        yield commit
        commit_id = commit.info.parent

"""The metadata store in SQLite (WAL): one file, one writer at a time, crash-safe."""

import json
import pathlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pfs.core import codec
from pfs.core.model import ChunkRef, CommitInfo, CommitRef, FileWrite, JobInfo, LogLine, PipelineInfo, RepoInfo
from server import disk
from server.meta import MetaStore, StoredChunk, StoredCommit, Tx

SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    branch TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    size INTEGER NOT NULL,
    provenance TEXT NOT NULL,
    tree BLOB,
    UNIQUE (repo, id)
);
CREATE INDEX IF NOT EXISTS commits_parent ON commits (repo, parent);
CREATE TABLE IF NOT EXISTS branches (
    repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    head TEXT NOT NULL,
    PRIMARY KEY (repo, name)
);
CREATE TABLE IF NOT EXISTS objects (
    address BLOB PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pipelines (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    pipeline TEXT NOT NULL,
    info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_pipeline ON jobs (pipeline);
CREATE TABLE IF NOT EXISTS staged_files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    shard INTEGER NOT NULL,
    files TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS staged_files_shard ON staged_files (job, shard);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    shard INTEGER NOT NULL,
    time REAL NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_job ON logs (job);
CREATE TABLE IF NOT EXISTS stored_chunks (
    address BLOB PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    head BLOB NOT NULL,
    checksum BLOB NOT NULL
) WITHOUT ROWID;
"""
QUERY_BATCH = 500  # addresses per SQL IN (...)

_COMMIT_COLUMNS = "repo, id, parent, branch, started, finished, size, provenance, tree"
# PRAGMA user_version of the JSON columns' form: 1, the codec's (pfs.core.codec); 0, before it (_upgrade)
_VERSION = 1


class SqliteMetaStore(MetaStore):
    def __init__(self, path: pathlib.Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._dir = path.parent
        # Objects run to megabytes (a directory of 100,000 files): large pages, and a rowid
        # table, since WITHOUT ROWID tables with large rows take milliseconds per lookup.
        self._db.execute("PRAGMA page_size=65536")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        with self.transaction():
            _upgrade(self._db)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock, disk.space(self._dir):
            self._db.execute("BEGIN IMMEDIATE")
            tx = _SqliteTx(self._db)
            try:
                yield tx
                tx.flush()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a COMMIT that failed (a full disk) may have ended it already
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _upgrade(db: sqlite3.Connection) -> None:
    """Rewrites in the codec's form what a store of version 0 kept otherwise: provenance as [[repo, ref], ...],
    staged files as [[path, overwrite, [[address hex, size], ...]], ...] and a pipeline's parallelism as a number.
    The rest of its jobs and pipelines were already in the codec's form."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= _VERSION:
        return
    for seq, text in db.execute("SELECT seq, provenance FROM commits WHERE provenance != '[]'").fetchall():
        provenance = tuple(CommitRef(repo, ref) for repo, ref in json.loads(text))
        db.execute("UPDATE commits SET provenance = ? WHERE seq = ?", (codec.dumps(provenance), seq))
    for seq, text in db.execute("SELECT seq, files FROM staged_files").fetchall():
        writes = tuple(FileWrite(path, tuple(ChunkRef(bytes.fromhex(a), n) for a, n in chunks), overwrite)
                       for path, overwrite, chunks in json.loads(text))
        db.execute("UPDATE staged_files SET files = ? WHERE seq = ?", (codec.dumps(writes), seq))
    for seq, text in db.execute("SELECT seq, info FROM pipelines").fetchall():
        info = json.loads(text)
        if isinstance(info["spec"].get("parallelism"), int):  # a constant, before it was a ParallelismSpec
            info["spec"]["parallelism"] = {"constant": info["spec"]["parallelism"]}
            db.execute("UPDATE pipelines SET info = ? WHERE seq = ?", (json.dumps(info), seq))
    db.execute(f"PRAGMA user_version = {_VERSION}")


def _commit_row(c: StoredCommit) -> tuple:
    i = c.info
    return (i.repo, i.id, i.parent, i.branch, i.started, i.finished, i.size_bytes, codec.dumps(i.provenance), c.tree)


def _stored_commit(row: tuple) -> StoredCommit:
    repo, id_, parent, branch, started, finished, size, provenance, tree = row
    info = CommitInfo(
        repo=repo,
        id=id_,
        parent=parent,
        branch=branch,
        started=started,
        finished=finished,
        size_bytes=size,
        provenance=codec.loads(tuple[CommitRef, ...], provenance),
    )
    return StoredCommit(info, tree)


class _SqliteTx(Tx):
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._objects: dict[bytes, bytes] = {}  # written in one statement when the transaction ends

    def flush(self) -> None:
        if self._objects:
            self._db.executemany("INSERT OR IGNORE INTO objects (address, data) VALUES (?, ?)", self._objects.items())
            self._objects.clear()

    def _branch_names(self, repo: str) -> tuple[str, ...]:
        return tuple(n for n, _ in self.list_branches(repo))

    def _repo(self, row: tuple) -> RepoInfo:
        name, description, created = row
        size = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM commits WHERE repo = ? AND id IN "
            "(SELECT DISTINCT head FROM branches WHERE repo = ?)",
            (name, name),
        ).fetchone()[0]
        return RepoInfo(name, description, created, size, self._branch_names(name))

    def insert_repo(self, repo: RepoInfo) -> None:
        self._db.execute(
            "INSERT INTO repos (name, description, created) VALUES (?, ?, ?)",
            (repo.name, repo.description, repo.created),
        )

    def get_repo(self, name: str) -> RepoInfo | None:
        row = self._db.execute(
            "SELECT name, description, created FROM repos WHERE name = ?", (name,)
        ).fetchone()
        return self._repo(row) if row else None

    def list_repos(self) -> list[RepoInfo]:
        rows = self._db.execute(
            "SELECT name, description, created FROM repos ORDER BY created DESC"
        ).fetchall()
        return [self._repo(r) for r in rows]

    def delete_repo(self, name: str) -> None:
        self._db.execute("DELETE FROM repos WHERE name = ?", (name,))

    def insert_commit(self, commit: StoredCommit) -> None:
        self._db.execute(
            f"INSERT INTO commits ({_COMMIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _commit_row(commit),
        )

    def get_commit(self, repo: str, commit_id: str) -> StoredCommit | None:
        row = self._db.execute(
            f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE repo = ? AND id = ?", (repo, commit_id)
        ).fetchone()
        return _stored_commit(row) if row else None

    def update_commit(self, commit: StoredCommit) -> None:
        i = commit.info
        self._db.execute(
            "UPDATE commits SET finished = ?, size = ?, tree = ? WHERE repo = ? AND id = ?",
            (i.finished, i.size_bytes, commit.tree, i.repo, i.id),
        )

    def list_commits(self, repo: str) -> list[StoredCommit]:
        rows = self._db.execute(
            f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE repo = ? ORDER BY seq DESC", (repo,)
        ).fetchall()
        return [_stored_commit(r) for r in rows]

    def children(self, repo: str, commit_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM commits WHERE repo = ? AND parent = ? ORDER BY seq", (repo, commit_id)
        ).fetchall()
        return [r[0] for r in rows]

    def delete_commit(self, repo: str, commit_id: str) -> None:
        self._db.execute("DELETE FROM commits WHERE repo = ? AND id = ?", (repo, commit_id))

    def set_branch(self, repo: str, name: str, head: str) -> None:
        self._db.execute(
            "INSERT INTO branches (repo, name, head) VALUES (?, ?, ?) "
            "ON CONFLICT (repo, name) DO UPDATE SET head = excluded.head",
            (repo, name, head),
        )

    def get_branch(self, repo: str, name: str) -> str | None:
        row = self._db.execute(
            "SELECT head FROM branches WHERE repo = ? AND name = ?", (repo, name)
        ).fetchone()
        return row[0] if row else None

    def list_branches(self, repo: str) -> list[tuple[str, str]]:
        return self._db.execute(
            "SELECT name, head FROM branches WHERE repo = ? ORDER BY name", (repo,)
        ).fetchall()

    def delete_branch(self, repo: str, name: str) -> None:
        self._db.execute("DELETE FROM branches WHERE repo = ? AND name = ?", (repo, name))

    def put_object(self, address: bytes, data: bytes) -> None:
        self._objects.setdefault(address, data)

    def get_object(self, address: bytes) -> bytes | None:
        if address in self._objects:
            return self._objects[address]
        row = self._db.execute("SELECT data FROM objects WHERE address = ?", (address,)).fetchone()
        return row[0] if row else None

    def put_stored_chunks(self, chunks: Sequence[StoredChunk]) -> int:
        rows = self._db.executemany("INSERT OR IGNORE INTO stored_chunks VALUES (?, ?, ?, ?, ?, ?)",
                                    [(c.address, c.pack, c.offset, c.length, c.head, c.checksum) for c in chunks])
        return rows.rowcount

    def stored_chunks(self, addresses: Sequence[bytes]) -> dict[bytes, StoredChunk]:
        found = {}
        for i in range(0, len(addresses), QUERY_BATCH):
            batch = addresses[i : i + QUERY_BATCH]
            rows = self._db.execute("SELECT address, pack, offset, length, head, checksum FROM stored_chunks "
                                    f"WHERE address IN ({','.join('?' * len(batch))})", batch)
            found.update((r[0], StoredChunk(*r)) for r in rows)
        return found

    def put_pipeline(self, pipeline: PipelineInfo) -> None:
        self._db.execute(
            "INSERT INTO pipelines (name, info) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET info = excluded.info",
            (pipeline.name, codec.dumps(pipeline)),
        )

    def get_pipeline(self, name: str) -> PipelineInfo | None:
        row = self._db.execute("SELECT info FROM pipelines WHERE name = ?", (name,)).fetchone()
        return codec.loads(PipelineInfo, row[0]) if row else None

    def list_pipelines(self) -> list[PipelineInfo]:
        rows = self._db.execute("SELECT info FROM pipelines ORDER BY seq").fetchall()
        return [codec.loads(PipelineInfo, r[0]) for r in rows]

    def delete_pipeline(self, name: str) -> None:
        self._db.execute("DELETE FROM pipelines WHERE name = ?", (name,))

    def put_job(self, job: JobInfo) -> None:
        self._db.execute(
            "INSERT INTO jobs (id, pipeline, info) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET info = excluded.info",
            (job.id, job.pipeline, codec.dumps(job)),
        )

    def get_job(self, job_id: str) -> JobInfo | None:
        row = self._db.execute("SELECT info FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return codec.loads(JobInfo, row[0]) if row else None

    def list_jobs(self, pipeline: str = "") -> list[JobInfo]:
        if pipeline:
            rows = self._db.execute("SELECT info FROM jobs WHERE pipeline = ? ORDER BY seq DESC", (pipeline,))
        else:
            rows = self._db.execute("SELECT info FROM jobs ORDER BY seq DESC")
        return [codec.loads(JobInfo, r[0]) for r in rows.fetchall()]

    def stage_files(self, job_id: str, shard: int, writes: list[FileWrite]) -> None:
        self._db.execute("INSERT INTO staged_files (job, shard, files) VALUES (?, ?, ?)",
                         (job_id, shard, codec.dumps(writes)))

    def staged_files(self, job_id: str, shard: int) -> list[FileWrite]:
        rows = self._db.execute("SELECT files FROM staged_files WHERE job = ? AND shard = ? ORDER BY seq",
                                (job_id, shard)).fetchall()
        return [w for r in rows for w in codec.loads(tuple[FileWrite, ...], r[0])]

    def clear_staged(self, job_id: str, shard: int) -> None:
        self._db.execute("DELETE FROM staged_files WHERE job = ? AND shard = ?", (job_id, shard))

    def add_logs(self, lines: list[LogLine]) -> None:
        self._db.executemany("INSERT INTO logs (job, shard, time, stream, text) VALUES (?, ?, ?, ?, ?)",
                             [(x.job, x.shard, x.time, x.stream, x.text) for x in lines])

    def logs(self, job_id: str = "", pipeline: str = "") -> list[LogLine]:
        query = "SELECT job, shard, time, stream, text FROM logs"
        if job_id:
            rows = self._db.execute(f"{query} WHERE job = ? ORDER BY seq", (job_id,))
        else:
            rows = self._db.execute(f"{query} WHERE job IN (SELECT id FROM jobs WHERE pipeline = ?) ORDER BY seq",
                                    (pipeline,))
        return [LogLine(*r) for r in rows.fetchall()]

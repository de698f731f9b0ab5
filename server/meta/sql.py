"""The metadata store's SQL, shared by its SQL backends (sqlite.py, postgres.py): the schema, its versioned
upgrade steps and every Tx operation, over a DB-API cursor and a small Dialect for what the two spell apart.

A backend owns only its connection, its locking and its version counter; it never writes a query of the Tx.
"""

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pfs.core import codec
from pfs.core.errors import FailedPrecondition
from pfs.core.model import (
    ChunkRef, CommitInfo, CommitRef, FileWrite, JobInfo, LogLine, PipelineInfo, RepoInfo, ShardInfo,
)
from server.grace import DEFAULT_GRACE, refresh_before
from server.meta import StoredChunk, StoredCommit, StoredToken, Tx


@dataclass(frozen=True)
class Dialect:
    """What SQLite and PostgreSQL spell apart. Queries are written with ? placeholders."""

    placeholder: str  # for ?: "?" (sqlite3's qmark style) or "%s" (psycopg's)
    blob: str  # the bytes column type
    serial: str  # an integer primary key numbering rows in insertion order
    keyed: str  # what ends the definition of a table stored by its primary key (SQLite: WITHOUT ROWID)
    now: str  # the database's clock in seconds since the epoch: leases expire by one clock, whatever the servers'

    def sql(self, query: str) -> str:
        return query if self.placeholder == "?" else query.replace("?", self.placeholder)


# Sizes and offsets run past 2^31 (BIGINT), times are 8-byte floats (DOUBLE PRECISION): SQLite reads either name
# as the same affinity it always had, so a store it made before these names opens unchanged.
SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS commits (
    seq {serial},
    repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    parent TEXT NOT NULL,
    branch TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    finished DOUBLE PRECISION NOT NULL,
    size BIGINT NOT NULL,
    provenance TEXT NOT NULL,
    tree {blob},
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
    address {blob} PRIMARY KEY,
    data {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS pipelines (
    seq {serial},
    name TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq {serial},
    id TEXT NOT NULL UNIQUE,
    pipeline TEXT NOT NULL,
    info TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_pipeline ON jobs (pipeline);
CREATE TABLE IF NOT EXISTS staged_files (
    seq {serial},
    job TEXT NOT NULL,
    shard INTEGER NOT NULL,
    files TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS staged_files_shard ON staged_files (job, shard);
CREATE TABLE IF NOT EXISTS logs (
    seq {serial},
    job TEXT NOT NULL,
    shard INTEGER NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_job ON logs (job);
CREATE TABLE IF NOT EXISTS stored_chunks (
    address {blob} PRIMARY KEY,
    pack TEXT NOT NULL,
    "offset" BIGINT NOT NULL,
    length BIGINT NOT NULL,
    head {blob} NOT NULL,
    checksum {blob} NOT NULL
){keyed};
"""
QUERY_BATCH = 500  # addresses per SQL IN (...)
LOG_LINE_COST = 64  # what a log line costs the store beyond its characters (its row): a bound on a shard's log
# counts it, so that a flood of empty lines is bounded too


def schema(dialect: Dialect) -> list[str]:
    """The statements that create whatever of the schema is missing."""
    text = SCHEMA.format(serial=dialect.serial, blob=dialect.blob, keyed=dialect.keyed)
    return [s.strip() for s in text.split(";") if s.strip()]


def _codec_form(cur, d: Dialect) -> None:
    """Rewrites in the codec's form (pfs.core.codec) what a store of version 0 kept otherwise: provenance as
    [[repo, ref], ...], staged files as [[path, overwrite, [[address hex, size], ...]], ...] and a pipeline's
    parallelism as a number. The rest of its jobs and pipelines were already in the codec's form."""
    for seq, text in cur.execute("SELECT seq, provenance FROM commits WHERE provenance != '[]'").fetchall():
        provenance = tuple(CommitRef(repo, ref) for repo, ref in json.loads(text))
        cur.execute(d.sql("UPDATE commits SET provenance = ? WHERE seq = ?"), (codec.dumps(provenance), seq))
    for seq, text in cur.execute("SELECT seq, files FROM staged_files").fetchall():
        writes = tuple(FileWrite(path, tuple(ChunkRef(bytes.fromhex(a), n) for a, n in chunks), overwrite)
                       for path, overwrite, chunks in json.loads(text))
        cur.execute(d.sql("UPDATE staged_files SET files = ? WHERE seq = ?"), (codec.dumps(writes), seq))
    for seq, text in cur.execute("SELECT seq, info FROM pipelines").fetchall():
        info = json.loads(text)
        if isinstance(info["spec"].get("parallelism"), int):  # a constant, before it was a ParallelismSpec
            info["spec"]["parallelism"] = {"constant": info["spec"]["parallelism"]}
            cur.execute(d.sql("UPDATE pipelines SET info = ? WHERE seq = ?"), (json.dumps(info), seq))


def _cluster_tables(cur, d: Dialect) -> None:
    """The tables of a cluster of servers over one store: each server's heartbeat, and each pipeline's lease (held
    by the one server running its controller)."""
    for statement in (
        "CREATE TABLE servers (id TEXT PRIMARY KEY, address TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE leases (pipeline TEXT PRIMARY KEY, holder TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)",
    ):
        cur.execute(statement)


def _shard_rows(cur, d: Dialect) -> None:
    """A job's shards as rows of their own, so that a worker's report rewrites its shard, not its whole job."""
    cur.execute("CREATE TABLE shards (job TEXT NOT NULL, idx INTEGER NOT NULL, info TEXT NOT NULL, "
                f"PRIMARY KEY (job, idx)){d.keyed}")
    for seq, job_id, text in cur.execute("SELECT seq, id, info FROM jobs").fetchall():
        info = json.loads(text)
        for shard in info.pop("shards", []):
            cur.execute(d.sql("INSERT INTO shards (job, idx, info) VALUES (?, ?, ?)"),
                        (job_id, shard["index"], json.dumps(shard)))
        cur.execute(d.sql("UPDATE jobs SET info = ? WHERE seq = ?"), (json.dumps(info), seq))


def _tokens(cur, d: Dialect) -> None:
    """Tokens, by the SHA-256 of each (a token itself is never stored): whom it stands for, until when, and for a
    server's own (root) token, which server's it is."""
    cur.execute(f"CREATE TABLE tokens (hash {d.blob} PRIMARY KEY, subject TEXT NOT NULL, "
                "created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL, "
                f"revoked DOUBLE PRECISION NOT NULL, server TEXT NOT NULL){d.keyed}")


def _roles(cur, d: Dialect) -> None:
    """Each subject's role on each repo (server/roles.py)."""
    cur.execute("CREATE TABLE roles (repo TEXT NOT NULL REFERENCES repos(name) ON DELETE CASCADE, subject TEXT NOT "
                f"NULL, role TEXT NOT NULL, PRIMARY KEY (repo, subject)){d.keyed}")


def _touched(cur, d: Dialect) -> None:
    """When each object and recorded chunk was last touched (server/grace.py); 0 for what an older store held,
    which an upload touches again the first time it finds it. And the packs a garbage collection rewrote, each
    retired until no URL signed for it is valid any more."""
    for table in ("objects", "stored_chunks"):
        cur.execute(f"ALTER TABLE {table} ADD COLUMN touched DOUBLE PRECISION NOT NULL DEFAULT 0")
    cur.execute("CREATE TABLE retired_packs (pack TEXT PRIMARY KEY, retired DOUBLE PRECISION NOT NULL)")


def _log_sizes(cur, d: Dialect) -> None:
    """What each shard's log holds (LOG_LINE_COST a line more than its characters), and how many of its first lines
    were dropped to keep it within its bound (Tx.add_logs); the logs a store held before, counted."""
    cur.execute("CREATE TABLE log_sizes (job TEXT NOT NULL, shard INTEGER NOT NULL, size BIGINT NOT NULL, "
                f"dropped BIGINT NOT NULL, PRIMARY KEY (job, shard)){d.keyed}")
    cur.execute("CREATE INDEX logs_shard ON logs (job, shard, seq)")
    cur.execute(f"INSERT INTO log_sizes (job, shard, size, dropped) SELECT job, shard, "
                f"SUM(LENGTH(text) + {LOG_LINE_COST}), 0 FROM logs GROUP BY job, shard")


def _settings(cur, d: Dialect) -> None:
    """What the servers of a store must agree on (server/membership.py): its cluster's id, where its chunks are,
    the garbage collection grace."""
    cur.execute(f"CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL){d.keyed}")


def _paged_trees(cur, d: Dialect) -> None:
    """Nothing in the tables: from this version on, a directory of more than 2,048 entries may be stored in pages
    (server/trees.py), which a pfs that knows fewer steps cannot read, so it refuses the store."""


def _paged_files(cur, d: Dialect) -> None:
    """Nothing in the tables: from this version on, a file of more than 256 chunks may be stored in pages
    (server/trees.py), which a pfs that knows fewer steps cannot read, so it refuses the store."""


def _one_off_commits(cur, d: Dialect) -> None:
    """Whether each commit was started by a write for itself (CommitInfo.one_off); none before."""
    cur.execute("ALTER TABLE commits ADD COLUMN one_off INTEGER NOT NULL DEFAULT 0")


def _commit_descriptions(cur, d: Dialect) -> None:
    """What each commit holds, as its maker said (CommitInfo.description); none before."""
    cur.execute("ALTER TABLE commits ADD COLUMN description TEXT NOT NULL DEFAULT ''")


# Step N brings a store of version N - 1 to version N; a store is made at version 0 (the schema, created above)
# and a new server runs the steps it has not had, in one transaction. Append; never edit a step once released.
STEPS: list[Callable] = [_codec_form, _cluster_tables, _shard_rows, _tokens, _roles, _touched, _log_sizes,
                         _settings, _paged_trees, _one_off_commits, _commit_descriptions, _paged_files]


def upgrade(cur, d: Dialect, version: int) -> int:
    """Runs the steps a store at VERSION has not had; the version it is at now. A store of a later version, which a
    newer pfs wrote, is refused: what it holds may not read as this pfs knows it."""
    if version > len(STEPS):
        raise FailedPrecondition(f"the metadata store is at version {version}, written by a newer pfs (this one "
                                 f"knows {len(STEPS)}): run that pfs, or a later one")
    for step in STEPS[version:]:
        step(cur, d)
    return len(STEPS)


_COMMIT_COLUMNS = "repo, id, parent, branch, started, finished, size, provenance, tree, one_off, description"
_CHUNK_COLUMNS = 'address, pack, "offset", length, head, checksum'


def _commit_row(c: StoredCommit) -> tuple:
    i = c.info
    return (i.repo, i.id, i.parent, i.branch, i.started, i.finished, i.size_bytes, codec.dumps(i.provenance), c.tree,
            int(i.one_off), i.description)


_PUT_SHARD = "INSERT INTO shards (job, idx, info) VALUES (?, ?, ?) ON CONFLICT (job, idx) DO UPDATE SET info = excluded.info"


def _batches(addresses: Sequence) -> Iterator[Sequence]:
    for i in range(0, len(addresses), QUERY_BATCH):
        yield addresses[i : i + QUERY_BATCH]


def _shard(info: str) -> ShardInfo:
    return codec.loads(ShardInfo, info)


def _pipeline(row: tuple) -> PipelineInfo:
    info, controller = row
    return dataclasses.replace(codec.loads(PipelineInfo, info), controller=controller)


def _whose_logs(job_id: str, pipeline: str) -> tuple[str, str]:
    """The condition on the logs table, and its parameter, of job JOB_ID's lines or (no JOB_ID) PIPELINE's."""
    if job_id:
        return "job = ?", job_id
    return "job IN (SELECT id FROM jobs WHERE pipeline = ?)", pipeline


def _stored_commit(row: tuple) -> StoredCommit:
    repo, id_, parent, branch, started, finished, size, provenance, tree, one_off, description = row
    info = CommitInfo(
        repo=repo,
        id=id_,
        parent=parent,
        branch=branch,
        started=started,
        finished=finished,
        size_bytes=size,
        provenance=codec.loads(tuple[CommitRef, ...], provenance),
        one_off=bool(one_off),
        description=description,
    )
    return StoredCommit(info, tree)


class SqlTx(Tx):
    """The operations of one transaction the backend has begun on CUR's connection."""

    def __init__(self, cur, dialect: Dialect, grace: float = DEFAULT_GRACE) -> None:
        self._cur = cur
        self._d = dialect
        self._now = time.time()  # what is written or touched here is touched now (server/grace.py)
        self._stale = refresh_before(self._now, grace)
        self._objects: dict[bytes, bytes] = {}  # written in one statement when the transaction ends

    def _execute(self, query: str, params: Sequence = ()):
        return self._cur.execute(self._d.sql(query), params)

    def _executemany(self, query: str, rows: Sequence[Sequence]) -> int:
        """How many rows the statement changed, over all of ROWS."""
        if not rows:
            return 0
        self._cur.executemany(self._d.sql(query), rows)
        return self._cur.rowcount

    def flush(self) -> None:
        """Writes what the transaction holds back; the backend calls it before it commits."""
        self._executemany("INSERT INTO objects (address, data, touched) VALUES (?, ?, ?) ON CONFLICT (address) "
                          "DO UPDATE SET touched = excluded.touched WHERE objects.touched < ?",
                          [(a, data, self._now, self._stale) for a, data in self._objects.items()])
        self._objects.clear()

    def _branch_names(self, repo: str) -> tuple[str, ...]:
        return tuple(n for n, _ in self.list_branches(repo))

    def _repo(self, row: tuple) -> RepoInfo:
        name, description, created = row
        size = self._execute(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM commits WHERE repo = ? AND id IN "
            "(SELECT DISTINCT head FROM branches WHERE repo = ?)",
            (name, name),
        ).fetchone()[0]
        return RepoInfo(name, description, created, size, self._branch_names(name))

    def insert_repo(self, repo: RepoInfo) -> None:
        self._execute("INSERT INTO repos (name, description, created) VALUES (?, ?, ?)",
                      (repo.name, repo.description, repo.created))

    def get_repo(self, name: str) -> RepoInfo | None:
        row = self._execute("SELECT name, description, created FROM repos WHERE name = ?", (name,)).fetchone()
        return self._repo(row) if row else None

    def has_repo(self, name: str) -> bool:
        return self._execute("SELECT 1 FROM repos WHERE name = ?", (name,)).fetchone() is not None

    def list_repos(self) -> list[RepoInfo]:
        rows = self._execute("SELECT name, description, created FROM repos ORDER BY created DESC").fetchall()
        return [self._repo(r) for r in rows]

    def delete_repo(self, name: str) -> None:
        self._execute("DELETE FROM repos WHERE name = ?", (name,))

    def insert_commit(self, commit: StoredCommit) -> None:
        self._execute(f"INSERT INTO commits ({_COMMIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      _commit_row(commit))

    def get_commit(self, repo: str, commit_id: str) -> StoredCommit | None:
        row = self._execute(f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE repo = ? AND id = ?",
                            (repo, commit_id)).fetchone()
        return _stored_commit(row) if row else None

    def update_commit(self, commit: StoredCommit) -> None:
        i = commit.info
        self._execute("UPDATE commits SET finished = ?, size = ?, tree = ?, description = ? WHERE repo = ? AND id = ?",
                      (i.finished, i.size_bytes, commit.tree, i.description, i.repo, i.id))

    def list_commits(self, repo: str) -> list[StoredCommit]:
        rows = self._execute(f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE repo = ? ORDER BY seq DESC",
                             (repo,)).fetchall()
        return [_stored_commit(r) for r in rows]

    def children(self, repo: str, commit_id: str) -> list[str]:
        rows = self._execute("SELECT id FROM commits WHERE repo = ? AND parent = ? ORDER BY seq",
                             (repo, commit_id)).fetchall()
        return [r[0] for r in rows]

    def delete_commit(self, repo: str, commit_id: str) -> None:
        self._execute("DELETE FROM commits WHERE repo = ? AND id = ?", (repo, commit_id))

    def set_branch(self, repo: str, name: str, head: str) -> None:
        self._execute("INSERT INTO branches (repo, name, head) VALUES (?, ?, ?) "
                      "ON CONFLICT (repo, name) DO UPDATE SET head = excluded.head", (repo, name, head))

    def get_branch(self, repo: str, name: str) -> str | None:
        row = self._execute("SELECT head FROM branches WHERE repo = ? AND name = ?", (repo, name)).fetchone()
        return row[0] if row else None

    def list_branches(self, repo: str) -> list[tuple[str, str]]:
        rows = self._execute("SELECT name, head FROM branches WHERE repo = ? ORDER BY name", (repo,)).fetchall()
        return [tuple(r) for r in rows]

    def delete_branch(self, repo: str, name: str) -> None:
        self._execute("DELETE FROM branches WHERE repo = ? AND name = ?", (repo, name))

    def put_object(self, address: bytes, data: bytes) -> None:
        self._objects.setdefault(address, data)

    def get_object(self, address: bytes) -> bytes | None:
        if address in self._objects:
            return self._objects[address]
        row = self._execute("SELECT data FROM objects WHERE address = ?", (address,)).fetchone()
        return row[0] if row else None

    def put_stored_chunks(self, chunks: Sequence[StoredChunk]) -> int:
        return self._executemany(f"INSERT INTO stored_chunks ({_CHUNK_COLUMNS}, touched) VALUES (?, ?, ?, ?, ?, ?, ?) "
                                 "ON CONFLICT DO NOTHING",
                                 [(c.address, c.pack, c.offset, c.length, c.head, c.checksum, self._now)
                                  for c in chunks])

    def stored_chunks(self, addresses: Sequence[bytes], touch: bool = False) -> dict[bytes, StoredChunk]:
        found = {}
        for batch in _batches(addresses):
            where = f"address IN ({','.join('?' * len(batch))})"
            if touch:
                self._execute(f"UPDATE stored_chunks SET touched = ? WHERE {where} AND touched < ?",
                              (self._now, *batch, self._stale))
            rows = self._execute(f"SELECT {_CHUNK_COLUMNS} FROM stored_chunks WHERE {where}", batch)
            found.update((r[0], StoredChunk(*r)) for r in rows.fetchall())
        return found

    # -- garbage collection (server/gc.py) and the check (server/check.py)

    def commit_roots(self) -> list[tuple[str, str, bytes]]:
        rows = self._execute("SELECT repo, id, tree FROM commits WHERE tree IS NOT NULL ORDER BY repo, seq")
        return [(repo, id_, bytes(tree)) for repo, id_, tree in rows.fetchall() if tree]

    def all_staged_files(self) -> list[FileWrite]:
        rows = self._execute("SELECT files FROM staged_files").fetchall()
        return [w for r in rows for w in codec.loads(tuple[FileWrite, ...], r[0])]

    def get_objects(self, addresses: Sequence[bytes]) -> dict[bytes, bytes]:
        return self._objects_of("data", addresses, bytes)

    def object_sizes(self, addresses: Sequence[bytes]) -> dict[bytes, int]:
        return self._objects_of("LENGTH(data)", addresses, int)

    def _objects_of(self, column: str, addresses: Sequence[bytes], kind: type) -> dict:
        found = {}
        for batch in _batches(addresses):
            rows = self._execute(f"SELECT address, {column} FROM objects WHERE address IN "
                                 f"({','.join('?' * len(batch))})", batch)
            found.update((bytes(a), kind(v)) for a, v in rows.fetchall())
        return found

    def object_addresses(self, after: bytes, limit: int) -> list[bytes]:
        rows = self._execute("SELECT address FROM objects WHERE address > ? ORDER BY address LIMIT ?", (after, limit))
        return [bytes(r[0]) for r in rows.fetchall()]

    def delete_objects(self, addresses: Sequence[bytes], cutoff: float, dry_run: bool) -> tuple[int, int]:
        return self._delete("objects", "LENGTH(data)", addresses, cutoff, dry_run)

    def stored_chunk_rows(self, after: bytes, limit: int) -> list[tuple[bytes, str, int, float]]:
        rows = self._execute("SELECT address, pack, length, touched FROM stored_chunks WHERE address > ? "
                             "ORDER BY address LIMIT ?", (after, limit))
        return [(bytes(a), pack, length, touched) for a, pack, length, touched in rows.fetchall()]

    def pack_chunks(self, pack: str) -> list[StoredChunk]:
        rows = self._execute(f"SELECT {_CHUNK_COLUMNS} FROM stored_chunks WHERE pack = ?", (pack,)).fetchall()
        return [StoredChunk(*r) for r in rows]

    def delete_stored_chunks(self, addresses: Sequence[bytes], cutoff: float, dry_run: bool) -> tuple[int, int]:
        return self._delete("stored_chunks", "length", addresses, cutoff, dry_run)

    def _delete(self, table: str, size: str, addresses: Sequence[bytes], cutoff: float,
                dry_run: bool) -> tuple[int, int]:
        """Deletes (unless DRY_RUN) the rows of ADDRESSES touched before CUTOFF, in this transaction: a touch
        comes before or after it, never between the look and the delete. How many, and their SIZE in bytes."""
        count = total = 0
        for batch in _batches(addresses):
            where = f"WHERE address IN ({','.join('?' * len(batch))}) AND touched < ?"
            n, size_ = self._execute(f"SELECT COUNT(*), CAST(COALESCE(SUM({size}), 0) AS BIGINT) FROM {table} {where}",
                                     (*batch, cutoff)).fetchone()
            if n and not dry_run:
                self._execute(f"DELETE FROM {table} {where}", (*batch, cutoff))
            count, total = count + n, total + size_
        return count, total

    def move_stored_chunks(self, chunks: Sequence[StoredChunk], old_pack: str) -> None:
        self._executemany('UPDATE stored_chunks SET pack = ?, "offset" = ?, checksum = ? WHERE address = ? AND pack = ?',
                          [(c.pack, c.offset, c.checksum, c.address, old_pack) for c in chunks])
        self._execute("INSERT INTO retired_packs (pack, retired) VALUES (?, ?) ON CONFLICT DO NOTHING",
                      (old_pack, self._now))

    def retired_packs(self) -> dict[str, float]:
        return dict(self._execute("SELECT pack, retired FROM retired_packs").fetchall())

    def forget_retired(self, packs: Sequence[str]) -> None:
        self._executemany("DELETE FROM retired_packs WHERE pack = ?", [(p,) for p in packs])

    def put_pipeline(self, pipeline: PipelineInfo) -> None:
        info = codec.dumps(dataclasses.replace(pipeline, controller=""))  # the lease says who it is (_PIPELINES)
        self._execute("INSERT INTO pipelines (name, info) VALUES (?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET info = excluded.info", (pipeline.name, info))

    def get_pipeline(self, name: str) -> PipelineInfo | None:
        row = self._execute(f"{self._pipelines} WHERE p.name = ?", (name,)).fetchone()
        return _pipeline(row) if row else None

    def list_pipelines(self) -> list[PipelineInfo]:
        return [_pipeline(r) for r in self._execute(f"{self._pipelines} ORDER BY p.seq").fetchall()]

    @property
    def _pipelines(self) -> str:
        """The pipelines' query: each with the server holding its lease, if one does."""
        return ("SELECT p.info, COALESCE(l.holder, '') FROM pipelines p LEFT JOIN leases l "
                f"ON l.pipeline = p.name AND l.expires > {self._d.now}")

    def delete_pipeline(self, name: str) -> None:
        self._execute("DELETE FROM pipelines WHERE name = ?", (name,))
        self._execute("DELETE FROM leases WHERE pipeline = ?", (name,))

    def beat(self, server: str, address: str, ttl: float) -> None:
        self._execute(f"INSERT INTO servers (id, address, expires) VALUES (?, ?, {self._d.now} + ?) "
                      "ON CONFLICT (id) DO UPDATE SET address = excluded.address, expires = excluded.expires",
                      (server, address, ttl))

    def live_servers(self) -> dict[str, str]:
        rows = self._execute(f"SELECT id, address FROM servers WHERE expires > {self._d.now} ORDER BY id")
        return dict(rows.fetchall())

    def claim_lease(self, pipeline: str, server: str, ttl: float) -> bool:
        self._execute(f"INSERT INTO leases (pipeline, holder, expires) VALUES (?, ?, {self._d.now} + ?) "
                      "ON CONFLICT (pipeline) DO UPDATE SET holder = excluded.holder, expires = excluded.expires "
                      f"WHERE leases.holder = excluded.holder OR leases.expires <= {self._d.now}",
                      (pipeline, server, ttl))
        return self.leases().get(pipeline) == server

    def release_lease(self, name: str, holder: str) -> None:
        self._execute("DELETE FROM leases WHERE pipeline = ? AND holder = ?", (name, holder))

    def leases(self) -> dict[str, str]:
        rows = self._execute(f"SELECT pipeline, holder FROM leases WHERE expires > {self._d.now}")
        return dict(rows.fetchall())

    def setting(self, name: str, value: str) -> str:
        self._execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, value))
        return self._execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()[0]

    def put_setting(self, name: str, value: str) -> None:
        self._execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                      "value = excluded.value", (name, value))

    def drop_server(self, server: str) -> None:
        self._execute("DELETE FROM leases WHERE holder = ?", (server,))
        self._execute("DELETE FROM servers WHERE id = ?", (server,))

    def put_token(self, token: StoredToken) -> None:
        t = token
        self._execute("INSERT INTO tokens (hash, subject, created, expires, revoked, server) VALUES (?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT DO NOTHING", (t.hash, t.subject, t.created, t.expires, t.revoked, t.server))

    def tokens(self) -> list[StoredToken]:
        rows = self._execute("SELECT hash, subject, created, expires, revoked, server FROM tokens").fetchall()
        return [StoredToken(*r) for r in rows]

    def retire_server_tokens(self, server: str, keep: bytes, when: float) -> int:
        self._execute("UPDATE tokens SET revoked = ? WHERE server = ? AND hash != ? AND revoked = 0",
                      (when, server, keep))
        return self._cur.rowcount

    def revoke_tokens(self, subject: str, hash: bytes, when: float) -> int:
        self._execute("UPDATE tokens SET revoked = ? WHERE (subject = ? OR hash = ?) AND revoked = 0",
                      (when, subject, hash))
        return self._cur.rowcount

    def forget_tokens(self, before: float) -> int:
        self._execute("DELETE FROM tokens WHERE (revoked > 0 AND revoked < ?) OR (expires > 0 AND expires < ?)",
                      (before, before))
        return self._cur.rowcount

    def set_role(self, repo: str, subject: str, role: str) -> None:
        if role:
            self._execute("INSERT INTO roles (repo, subject, role) VALUES (?, ?, ?) "
                          "ON CONFLICT (repo, subject) DO UPDATE SET role = excluded.role", (repo, subject, role))
        else:
            self._execute("DELETE FROM roles WHERE repo = ? AND subject = ?", (repo, subject))

    def roles(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self._execute("SELECT repo, subject, role FROM roles").fetchall()]

    def put_job(self, job: JobInfo) -> None:
        self._execute("INSERT INTO jobs (id, pipeline, info) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                      "info = excluded.info", (job.id, job.pipeline, codec.dumps(dataclasses.replace(job, shards=()))))
        self._executemany(_PUT_SHARD, [(job.id, s.index, codec.dumps(s)) for s in job.shards])

    def delete_jobs(self, output_repo: str) -> None:
        rows = self._execute("SELECT id, pipeline, info FROM jobs WHERE pipeline IN (?, '')", (output_repo,)).fetchall()
        ids = [i for i, pipeline, info in rows if pipeline or codec.loads(JobInfo, info).output_repo == output_repo]
        for batch in _batches(ids):
            marks = ", ".join("?" * len(batch))
            self._execute(f"DELETE FROM jobs WHERE id IN ({marks})", batch)
            for table in ("shards", "staged_files", "logs", "log_sizes"):
                self._execute(f"DELETE FROM {table} WHERE job IN ({marks})", batch)

    def put_shard(self, job_id: str, shard: ShardInfo) -> None:
        self._execute(_PUT_SHARD, (job_id, shard.index, codec.dumps(shard)))

    def get_job(self, job_id: str) -> JobInfo | None:
        row = self._execute("SELECT info FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        shards = self._execute("SELECT info FROM shards WHERE job = ? ORDER BY idx", (job_id,)).fetchall()
        return dataclasses.replace(codec.loads(JobInfo, row[0]), shards=tuple(_shard(r[0]) for r in shards))

    def list_jobs(self, pipeline: str = "") -> list[JobInfo]:
        where, params = ("WHERE pipeline = ?", (pipeline,)) if pipeline else ("", ())
        rows = self._execute(f"SELECT id, info FROM jobs {where} ORDER BY seq DESC", params).fetchall()
        shards: dict[str, list[ShardInfo]] = {job_id: [] for job_id, _ in rows}
        for job_id, info in self._execute(f"SELECT job, info FROM shards WHERE job IN (SELECT id FROM jobs {where}) "
                                          "ORDER BY job, idx", params).fetchall():
            shards[job_id].append(_shard(info))
        return [dataclasses.replace(codec.loads(JobInfo, info), shards=tuple(shards[job_id])) for job_id, info in rows]

    def stage_files(self, job_id: str, shard: int, writes: list[FileWrite]) -> None:
        self._execute("INSERT INTO staged_files (job, shard, files) VALUES (?, ?, ?)",
                      (job_id, shard, codec.dumps(writes)))

    def staged_files(self, job_id: str, shard: int) -> list[FileWrite]:
        rows = self._execute("SELECT files FROM staged_files WHERE job = ? AND shard = ? ORDER BY seq",
                             (job_id, shard)).fetchall()
        return [w for r in rows for w in codec.loads(tuple[FileWrite, ...], r[0])]

    def clear_staged(self, job_id: str, shard: int) -> None:
        self._execute("DELETE FROM staged_files WHERE job = ? AND shard = ?", (job_id, shard))

    def add_logs(self, lines: list[LogLine], keep: int) -> None:
        self._executemany("INSERT INTO logs (job, shard, time, stream, text) VALUES (?, ?, ?, ?, ?)",
                          [(x.job, x.shard, x.time, x.stream, x.text) for x in lines])
        added: dict[tuple[str, int], int] = {}
        for x in lines:
            added[x.job, x.shard] = added.get((x.job, x.shard), 0) + len(x.text) + LOG_LINE_COST
        for (job, shard), size in added.items():
            size, dropped = self._execute(
                "INSERT INTO log_sizes (job, shard, size, dropped) VALUES (?, ?, ?, 0) ON CONFLICT (job, shard) "
                "DO UPDATE SET size = log_sizes.size + excluded.size RETURNING size, dropped",
                (job, shard, size)).fetchone()
            if size > keep:
                self._trim_log(job, shard, size - keep * 3 // 4, dropped)  # a quarter of room: not on every batch

    def _trim_log(self, job: str, shard: int, excess: int, dropped: int) -> None:
        """Drops the first lines of a shard's log, EXCESS of its size at least, and marks where they were: the last
        of them becomes a line of the shim's saying how many were dropped in all (the mark of the trim before,
        after DROPPED lines, is the first to go)."""
        freed = lines = 0
        last = None
        for seq, n in self._execute("SELECT seq, LENGTH(text) FROM logs WHERE job = ? AND shard = ? ORDER BY seq",
                                    (job, shard)):
            freed += n + LOG_LINE_COST
            lines += 1
            last = seq
            if freed >= excess:
                break
        dropped += lines - (1 if dropped else 0)  # the mark was no line of the command's
        mark = f"job-shim: {dropped} earlier lines of this shard's log were dropped, to keep it within its bound"
        self._execute("DELETE FROM logs WHERE job = ? AND shard = ? AND seq < ?", (job, shard, last))
        self._execute("UPDATE logs SET stream = 'shim', text = ? WHERE seq = ?", (mark, last))
        self._execute("UPDATE log_sizes SET size = size - ?, dropped = ? WHERE job = ? AND shard = ?",
                      (freed - len(mark) - LOG_LINE_COST, dropped, job, shard))

    def logs(self, job_id: str, pipeline: str, after: int, limit: int) -> list[tuple[int, LogLine]]:
        whose, of = _whose_logs(job_id, pipeline)
        rows = self._execute(f"SELECT seq, job, shard, time, stream, text FROM logs WHERE {whose} AND seq > ? "
                             "ORDER BY seq LIMIT ?", (of, after, limit))
        return [(r[0], LogLine(*r[1:])) for r in rows.fetchall()]

    def logs_before_last(self, job_id: str, pipeline: str, count: int) -> int:
        whose, of = _whose_logs(job_id, pipeline)
        row = self._execute(f"SELECT seq FROM logs WHERE {whose} ORDER BY seq DESC LIMIT 1 OFFSET ?",
                            (of, count)).fetchone()
        return row[0] if row else 0

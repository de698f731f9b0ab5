"""The versioned store: repos, commits, branches and files over a chunk store and a metadata store.

All the rules of the model live here (what may be written when, how refs
resolve, append versus overwrite); the gRPC servicers only translate.
"""

import asyncio
import dataclasses
import itertools
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from pfs.core import compression, frames, names, paths, refs, splits
from pfs.core.errors import AlreadyExists, Conflict, FailedPrecondition, InvalidArgument, NotFound
from pfs.core.model import (
    MAX_LOCATE, BranchInfo, ChunkLocation, ChunkRef, CommitInfo, CommitRef, FileInfo, FileWrite, InputSpec, RepoInfo,
)
from server.grace import DEFAULT_GRACE
from server.meta import MetaStore, StoredCommit, Tx, walk_ancestry
from server.news import News
from server.storage import ChunkStore
from server.trees import EMPTY_TREE, Edit, Entry, Trees, unchanged

DEFAULT_BRANCH = "master"
# characters of a repo's or commit's description: a paragraph; list-repo sends every repo's in one message, which
# 1,100 of 64 Ki characters each (of 4 bytes) took past gRPC's bound
MAX_DESCRIPTION = 4 << 10
MAX_LIMIT = 2**63 - 1  # of a listing: a count, not a size
LIST_READ = 1000  # entries a listing reads in one transaction
VERIFY_AHEAD = 2  # batches checked ahead of the writer


class Store:
    def __init__(self, chunks: ChunkStore, meta: MetaStore, chunk_avg_size: int, grace: float = DEFAULT_GRACE) -> None:
        self.chunks = chunks
        self.meta = meta
        self.chunk_avg_size = chunk_avg_size
        self.grace = grace  # garbage collection's (server/grace.py): files are recorded within half of it
        self.trees = Trees()
        self.news = News()  # a commit finished, or a pipeline or job changed
        self._workers = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="verify")
        meta.listen(self.news.notify)  # the other servers' news

    # -- chunks

    def missing_chunks(self, addresses: list[bytes]) -> list[bytes]:
        return self.chunks.missing([frames.check_address(a) for a in addresses])

    def put_chunks(self, batches: Iterable[list[tuple[bytes, bytes]]]) -> int:
        """Stores batches of (address, zstd frame), after checking each chunk against its address."""
        return self.chunks.put(self._verified(batches))

    def get_chunks(self, addresses: list[bytes]) -> Iterator[bytes]:
        """The stored frames of ADDRESSES in order (the chunk store may fetch them together, or ahead)."""
        return self.chunks.get_many([frames.check_address(a) for a in addresses])

    def locate_chunks(self, addresses: list[bytes]) -> list[ChunkLocation | None]:
        """Where a client may fetch each chunk without this server (None: the store lacks it); FailedPrecondition
        from a store that gives no locations."""
        if len(addresses) > MAX_LOCATE:
            raise InvalidArgument(f"{len(addresses)} chunks asked for in one call; at most {MAX_LOCATE} are allowed")
        return self.chunks.locate([frames.check_address(a) for a in addresses])

    def _verified(self, batches: Iterable[list[tuple[bytes, bytes]]]) -> Iterator[tuple[bytes, bytes]]:
        """The chunks in order, each batch checked on the worker threads while earlier ones are written."""
        window: deque = deque()
        for batch in batches:
            window.append(self._workers.submit(_checked, batch))
            if len(window) > VERIFY_AHEAD:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()

    # -- repos

    def create_repo(self, name: str, description: str = "") -> RepoInfo:
        names.check_repo(name)
        _check_description(f"the description of repo {name!r}", description)
        with self.meta.transaction() as tx:
            if tx.has_repo(name):
                raise AlreadyExists(f"repo {name!r} already exists")
            tx.insert_repo(RepoInfo(name, description, time.time(), 0))
            return self._repo(tx, name)

    def inspect_repo(self, name: str) -> RepoInfo:
        with self.meta.transaction() as tx:
            return self._repo(tx, name)

    def list_repos(self) -> list[RepoInfo]:
        with self.meta.transaction() as tx:
            return tx.list_repos()

    def delete_repo(self, name: str, force: bool = False) -> None:
        """Deletes repo NAME, its commits and the jobs that wrote them. Never a pipeline's output repo; a repo that
        pipelines read only if FORCE (as 1.x's --force): they make no job until it is back."""
        with self.meta.making_room(), self.meta.transaction() as tx:
            self._check_repo(tx, name)
            if tx.get_pipeline(name) is not None:
                raise FailedPrecondition(f"repo {name!r} is the output of pipeline {name!r}, which would fail its "
                                         f"next job and those after it: delete the pipeline first (pfs "
                                         f"delete-pipeline {name})")
            if not force:
                _check_unread(tx, f"repo {name!r}", lambda i: i.repo == name, f"delete-repo {name}")
            tx.delete_repo(name)
            tx.delete_jobs(name)  # and what they say (their manifests, logs) with it: a repo made in its name later
            # is another, whose readers are not this one's
        self.notify_finished()  # its subscribers end, and pipelines reading it say so, now

    # -- commits

    def start_commit(
        self, repo: str, branch: str = "", parent: str = "", provenance: tuple[CommitRef, ...] = (),
        one_off: bool = False, description: str = "",
    ) -> CommitInfo:
        branch = names.check_branch(branch or DEFAULT_BRANCH)
        _check_description(f"the description of a commit of repo {repo!r}", description)
        with self.meta.transaction() as tx:
            self._check_repo(tx, repo)
            if branch == DEFAULT_BRANCH and tx.get_pipeline(repo) is not None:  # an open commit there stops its jobs
                raise FailedPrecondition(f"repo {repo!r} is the output of pipeline {repo!r}: the commits of its "
                                         f"{branch} branch are the pipeline's jobs' (commit to another branch, or "
                                         f"delete the pipeline first: pfs delete-pipeline {repo})")
            if parent:
                base = self._resolve(tx, CommitRef(repo, parent))
            else:
                head = tx.get_branch(repo, branch)
                base = tx.get_commit(repo, head) if head else None
            if base is not None and not base.info.is_finished:
                raise Conflict(f"commit {base.info.id} on {repo}@{branch} is still open; finish it first (pfs "
                               f"finish-commit {repo} {base.info.id}), or delete it if what it holds is not wanted "
                               f"(pfs delete-commit {repo} {base.info.id})")
            # each as the commit it names now: a branch's head moves on
            provenance = tuple(CommitRef(p.repo, self._resolve(tx, p).info.id) for p in provenance)
            info = CommitInfo(
                repo=repo,
                id=names.new_commit_id(),
                parent=base.info.id if base else "",
                branch=branch,
                started=time.time(),
                finished=0,
                size_bytes=base.info.size_bytes if base else 0,
                provenance=provenance,
                one_off=one_off,
                description=description,
            )
            tx.insert_commit(StoredCommit(info, base.tree if base else None))
            tx.set_branch(repo, branch, info.id)
            return info

    def finish_commit(self, ref: CommitRef, description: str = "") -> CommitInfo:
        """Finishes the open commit REF, with DESCRIPTION in place of the one it has ('': it keeps its own)."""
        _check_description(f"the description of commit {ref}", description)
        with self.meta.transaction() as tx:
            commit = self._open_commit(tx, ref)
            info = dataclasses.replace(commit.info, finished=time.time(),
                                       description=description or commit.info.description)
            tx.update_commit(StoredCommit(info, commit.tree))
        self.notify_finished()
        return info

    def inspect_commit(self, ref: CommitRef) -> CommitInfo:
        with self.meta.transaction() as tx:
            return self._resolve(tx, ref).info

    def list_commits(self, repo: str, branch: str = "", limit: int = 0) -> list[CommitInfo]:
        _check_limit(limit)
        with self.meta.transaction() as tx:
            self._check_repo(tx, repo)
            if branch:
                head = tx.get_branch(repo, branch)
                if head is None:
                    raise NotFound(f"branch {branch!r} not found in repo {repo!r}")
                commits: Iterable[StoredCommit] = walk_ancestry(tx, repo, head)
            else:
                commits = tx.list_commits(repo)
            out = []
            for c in commits:
                out.append(c.info)
                if len(out) == limit:
                    break
            return out

    def delete_commit(self, ref: CommitRef) -> None:
        """Deletes a commit that has no children; branches on it move back to its parent."""
        with self.meta.making_room(), self.meta.transaction() as tx:
            commit = self._resolve(tx, ref)
            info = commit.info
            children = tx.children(info.repo, info.id)
            if children:
                raise FailedPrecondition(
                    f"commit {info.id} has {len(children)} child commit(s); delete those first"
                )
            for name, head in tx.list_branches(info.repo):
                if head == info.id:
                    if info.parent:
                        tx.set_branch(info.repo, name, info.parent)
                    else:
                        tx.delete_branch(info.repo, name)
            tx.delete_commit(info.repo, info.id)

    async def subscribe_commits(self, repo: str, branch: str, new_only: bool = False) -> AsyncIterator[CommitInfo]:
        """Finished commits on BRANCH, oldest first, then each new one as it finishes.

        Holds no thread while it waits: it looks at the store (in the event loop's pool of threads) only when
        news came, or after news.RECHECK seconds in case a notification was lost."""
        names.check_branch(branch)
        seen: set[str] = set()
        first = True
        while True:
            since = self.news.generation
            fresh = await asyncio.to_thread(self._finished_since, repo, branch, seen)
            if not (first and new_only):
                for info in fresh:
                    yield info
            first = False
            await self.news.wait_async(since)

    def _finished_since(self, repo: str, branch: str, seen: set[str]) -> list[CommitInfo]:
        """The finished commits on BRANCH not in SEEN, oldest first, now added to SEEN."""
        with self.meta.transaction() as tx:
            self._check_repo(tx, repo)
            head = tx.get_branch(repo, branch)
            fresh = []
            for c in walk_ancestry(tx, repo, head) if head else ():
                if c.info.id in seen:
                    break  # and so are all its ancestors
                fresh.append(c.info)
        fresh = [c for c in reversed(fresh) if c.is_finished]
        seen.update(c.id for c in fresh)
        return fresh

    # -- branches

    def list_branches(self, repo: str) -> list[BranchInfo]:
        with self.meta.transaction() as tx:
            self._check_repo(tx, repo)
            return [BranchInfo(n, h) for n, h in tx.list_branches(repo)]

    def set_branch(self, ref: CommitRef, branch: str) -> BranchInfo:
        names.check_branch(branch)
        with self.meta.transaction() as tx:
            commit = self._resolve(tx, ref)
            tx.set_branch(ref.repo, branch, commit.info.id)
            return BranchInfo(branch, commit.info.id)

    def delete_branch(self, repo: str, branch: str, force: bool = False) -> None:
        """Deletes BRANCH of REPO; its commits stay (by id, and on the branches that hold them). Never the master
        branch of a pipeline's output; a branch that pipelines read only if FORCE, as delete_repo."""
        with self.meta.transaction() as tx:
            self._check_repo(tx, repo)
            if branch == DEFAULT_BRANCH and tx.get_pipeline(repo) is not None:
                raise FailedPrecondition(f"{repo}@{branch} is where pipeline {repo!r} commits its jobs' output: delete "
                                         f"the pipeline first (pfs delete-pipeline {repo})")
            if tx.get_branch(repo, branch) is None:
                raise NotFound(f"no branch {branch!r} in repo {repo!r} (pfs list-branch {repo} lists them)")
            if not force:
                _check_unread(tx, f"{repo}@{branch}", lambda i: (i.repo, i.ref) == (repo, branch),
                              f"delete-branch {repo} {branch}")
            tx.delete_branch(repo, branch)
        self.notify_finished()  # its subscribers and the pipelines reading it see it gone now

    # -- files

    def put_files(self, ref: CommitRef, writes: list[FileWrite]) -> None:
        """Records files (and directories) into an open commit. Without overwrite, a write appends to the file."""
        with self.recording(writes, "the repo root") as (tx, writes):
            self._put(tx, self._open_commit(tx, ref), writes)

    @contextmanager
    def recording(self, writes: list[FileWrite], root: str) -> Iterator[tuple[Tx, list[FileWrite]]]:
        """A transaction to record WRITES in, once checked (_check_writes, which touches their chunks): it commits
        only within half a grace of the check. A garbage collection that did not see the records began before
        they were committed, so within that half grace of the touch, and keeps what was touched; a transaction
        that waited longer (behind others, on a busy store) is rolled back, and the upload is refused cleanly,
        rather than record chunks a collection may have freed meanwhile."""
        checked = time.monotonic()
        writes = self._check_writes(writes, root)
        with self.meta.transaction() as tx:
            yield tx, writes
            waited = time.monotonic() - checked
            if waited > self.grace / 2:
                raise FailedPrecondition(f"recording {len(writes)} file(s) took {waited:.1f} s after their chunks "
                                         f"were checked, more than half the garbage collection grace "
                                         f"({self.grace:g} s): nothing was recorded; send them again")

    def _check_writes(self, writes: list[FileWrite], root: str) -> list[FileWrite]:
        """WRITES with their paths normalized, if each names a file or directory (not ROOT) and chunks the store
        holds, each of the size it holds: a file's size is its chunks' as stored, never what a client says."""
        writes = [_normalized(w) for w in writes]
        if any(not w.path for w in writes):
            raise InvalidArgument(f"a file needs a path; {root} is a directory")
        for w in writes:
            if w.directory and w.chunks:
                raise InvalidArgument(f"directory {w.path!r} is written with {len(w.chunks)} chunk(s); "
                                      "a directory holds files, not bytes")
            if w.split and (w.directory or w.overwrite):
                raise InvalidArgument(f"the write of {w.path!r} is the next file of a split file: it makes no "
                                      "directory and overwrites nothing")
        chunks = [c for w in writes for c in w.chunks]
        for c in chunks:
            frames.check_claim(c)
        heads = self.chunks.heads(dict.fromkeys(c.address for c in chunks), compression.HEADER_BYTES)
        lacking = [c.address for c in chunks if c.address not in heads]
        if lacking:
            raise FailedPrecondition(
                f"{len(set(lacking))} chunk(s) were never uploaded (first: {lacking[0].hex()}); put them first"
            )
        for c in chunks:
            size = frames.plain_size(c.address, heads[c.address])
            if c.size != size:
                raise InvalidArgument(f"chunk {c.address.hex()} is declared as {c.size} bytes but holds {size}; "
                                      "declare the size of its plain bytes")
        return writes

    def commit_files(
        self, tx: Tx, repo: str, branch: str, provenance: tuple[CommitRef, ...], writes: list[FileWrite], fresh: bool
    ) -> CommitInfo:
        """Makes a finished commit on BRANCH holding WRITES (on a copy of the head's files unless FRESH), in TX.

        A job's output commit: made whole or not at all. Call notify_finished() once TX is committed.
        """
        head_id = tx.get_branch(repo, branch)
        head = tx.get_commit(repo, head_id) if head_id else None
        if head is not None and not head.info.is_finished:
            raise FailedPrecondition(f"commit {head.info.id} on {repo}@{branch} is still open; finish it first")
        now = time.time()
        info = CommitInfo(repo, names.new_commit_id(), head_id or "", branch, now, 0,
                          0 if fresh or head is None else head.info.size_bytes, provenance)
        commit = StoredCommit(info, None if fresh or head is None else head.tree)
        tx.insert_commit(commit)
        tx.set_branch(repo, branch, info.id)
        commit = self._put(tx, commit, writes)
        done = StoredCommit(dataclasses.replace(commit.info, finished=now), commit.tree)
        tx.update_commit(done)
        return done.info

    def notify_finished(self) -> None:
        """Wakes whoever waits for news, here and on the other servers of the store (a commit finished, or a
        pipeline or job changed); from any thread."""
        self.news.notify()
        self.meta.notify()

    def wait_finished(self, timeout: float) -> None:
        """Blocks this thread up to TIMEOUT seconds for news; Unavailable once the server is stopping."""
        self.news.wait(timeout)

    def stop_waiting(self) -> None:
        """Ends every wait for news, now and to come: the server is stopping."""
        self.news.stop()

    def _put(self, tx: Tx, commit: StoredCommit, writes: list[FileWrite]) -> StoredCommit:
        """Writes WRITES, as _check_writes() gives them, into COMMIT's tree."""
        root = _root(commit)
        edit = Edit()
        written: dict[str, list[ChunkRef]] = {}
        directories: dict[str, dict[str, Entry]] = {}  # the entries of each directory appended to, as they were
        after: dict[str, int] = {}  # the next index of each split file written to
        for w in writes:
            path = w.path
            if w.directory:
                edit.make_directory(paths.components(path))
                continue
            if w.split:
                index = after[path] if path in after else splits.next_index(self._split_names(tx, root, path), path)
                after[path] = index + 1
                path = paths.join(path, splits.name(index))
            chunks, extended = list(w.chunks), None
            if not w.overwrite:
                existing, extended = self._existing_chunks(tx, root, directories, written, path)
                chunks = existing + chunks
            written[path] = chunks
            edit.put(paths.components(path), self.trees.put_file(tx, chunks, extended))
        return self._write_tree(tx, commit, edit)

    def _split_names(self, tx: Tx, root: Entry, path: str) -> list[str]:
        """The names of the files of the split file PATH (none where it is not there yet)."""
        entry = self.trees.lookup(tx, root, path)
        if entry is not None and not entry.is_dir:
            raise FailedPrecondition(f"{path!r} is a file: --split puts a directory of files there; give -o to "
                                     "replace it, or another PATH")
        return list(self.trees.entries(tx, entry.address)) if entry is not None else []

    def delete_file(self, ref: CommitRef, path: str) -> None:
        path = paths.normalize(path)
        with self.meta.transaction() as tx:
            commit = self._open_commit(tx, ref)
            if self.trees.lookup(tx, _root(commit), path) is None:
                raise NotFound(f"file {path!r} not found in {ref}")
            if not path:
                self._write_tree(tx, commit, Edit(fresh=True))
                return
            edit = Edit()
            edit.put(paths.components(path), None)
            self._write_tree(tx, commit, edit)

    def inspect_file(self, ref: CommitRef, path: str) -> FileInfo:
        path = paths.normalize(path)
        with self.meta.transaction() as tx:
            commit = self._resolve(tx, ref)
            entry = self._entry(tx, commit, path, ref)
            chunks = () if entry.is_dir else self.trees.file_chunks(tx, entry)
            return FileInfo(path, entry.is_dir, entry.size, commit.info.id, chunks)

    def list_files(self, ref: CommitRef, path: str, with_chunks: bool = False, since: str = "",
                   incremental: str = "diff", recursive: bool = False, limit: int = 0) -> Iterator[FileInfo]:
        """The entries of the directory at PATH, or the file itself if PATH is a file.

        RECURSIVE: every entry below PATH, each directory followed by what it holds, in
        name order (so one call lists a whole tree); LIMIT, when not 0, stops after that many.
        With SINCE (an earlier commit of the repo), only what changed after it: entries equal
        there are left out; a changed file shows, under "diff", only the chunks added at its end
        (or all of it if it changed otherwise), and under "full" all of it. Each size is then
        that of what is shown (a directory's: of all that is shown below it), so a worker
        splitting what changed into equal shares knows where each file's part lies.

        Read LIST_READ entries at a time, each batch in a transaction of its own and given out after it: a listing
        of millions holds neither the metadata store nor more than a batch of memory while its caller sends it (a
        commit's trees never change). A commit deleted while it is listed (or SINCE is) may have its objects
        collected before the listing reads them: the listing then ends with NotFound saying so.
        """
        path = paths.normalize(path)
        _check_limit(limit)
        if incremental not in ("diff", "full"):
            raise InvalidArgument(f"unknown incremental {incremental!r}; use diff or full")
        tx = _Reading()  # each batch's transaction, in turn
        diff = incremental == "diff"

        def changed(e: Entry, old: Entry | None) -> bool:
            return not (since and unchanged(e, old))

        def info(where: str, e: Entry, old: Entry | None) -> FileInfo:
            if e.is_dir:
                return FileInfo(where, True, self.trees.changed_size(tx, e, old, diff) if since else e.size,
                                commit.info.id)
            if not since:
                return FileInfo(where, False, e.size, commit.info.id,
                                self.trees.file_chunks(tx, e) if with_chunks else ())
            added = self.trees.added_chunks(tx, e, old, diff)
            return FileInfo(where, False, sum(c.size for c in added), commit.info.id, added if with_chunks else ())

        def below(where: str, tree: Entry, old: Entry | None) -> Iterator[FileInfo]:
            before = old.address if old is not None and old.is_dir else None
            entries = self.trees.listed(tx, tree.address)
            for e in self.trees.loading_files(tx, entries) if with_chunks and not since else entries:
                old, at = self.trees.child(tx, before, e.name) if before else None, paths.join(where, e.name)
                if changed(e, old):
                    yield info(at, e, old)
                    if recursive and e.is_dir:
                        yield from below(at, e, old)

        with self.meta.transaction() as tx.now:
            commit = self._resolve(tx, ref)
            entry = self._entry(tx, commit, path, ref)
            earlier = self._resolve(tx, CommitRef(ref.repo, since)) if since else None
            base = self.trees.lookup(tx, _root(earlier), path) if earlier else None
            if entry.is_dir:
                walk = itertools.islice(below(path, entry, base), limit or None)
                batch = list(itertools.islice(walk, LIST_READ))
            else:
                walk, batch = iter(()), [info(path, entry, base)] if changed(entry, base) else []
        while batch:
            yield from batch
            if len(batch) < LIST_READ:
                return
            with self.meta.transaction() as tx.now:
                try:
                    batch = list(itertools.islice(walk, LIST_READ))
                except NotFound:  # an object gone: with the commit it was read from, or damage
                    for listed in (commit, earlier):
                        if listed and tx.get_commit(ref.repo, listed.info.id) is None:
                            raise NotFound(f"commit {listed.info.id} of {ref.repo!r} was deleted while it was "
                                           "listed, and what the listing had still to read was collected") from None
                    raise

    def adds_nothing(self, ref: CommitRef, since: CommitRef) -> bool:
        """Whether REF holds no file that SINCE (an earlier commit) does not hold as it is: the same files, or only
        fewer (deletions) and new empty directories, so a view of what changed after SINCE shows no file. Walks only
        the directories that differ, and stops at the first file that does."""
        with self.meta.transaction() as tx:
            todo = [(self._resolve(tx, ref).tree, self._resolve(tx, since).tree)]
            while todo:
                new, old = todo.pop()
                if not new or new == old:
                    continue
                olds = self.trees.entries(tx, old) if old else {}
                for name, e in self.trees.entries(tx, new).items():
                    before = olds.get(name)
                    if unchanged(e, before):
                        continue
                    if not e.is_dir:
                        return False
                    todo.append((e.address, before.address if before is not None and before.is_dir else None))
            return True

    def shard_units(self, ref: CommitRef, method: str, limit: int) -> int:
        """How many parts a METHOD view of a commit can be cut into, counted up to LIMIT.

        reduce: its top-level entries; map: its files' blocks; global: one.
        """
        with self.meta.transaction() as tx:
            root = _root(self._resolve(tx, ref))
            if method == "global" or root.address == b"":
                return 1
            if method == "reduce":
                return min(limit, len(self.trees.entries(tx, root.address)))
            count, todo = 0, [root.address]
            while todo and count < limit:
                for e in self.trees.loading_files(tx, list(self.trees.entries(tx, todo.pop()).values())):
                    if e.is_dir:
                        todo.append(e.address)
                    else:
                        count += len(self.trees.file_chunks(tx, e))
            return min(limit, count)

    # -- helpers

    def _repo(self, tx: Tx, name: str) -> RepoInfo:
        repo = tx.get_repo(name)
        if repo is None:
            raise _no_repo(name)
        return repo

    def _check_repo(self, tx: Tx, name: str) -> None:
        """NotFound unless repo NAME is there (what every call that names a ref asks first)."""
        if not tx.has_repo(name):
            raise _no_repo(name)

    def _resolve(self, tx: Tx, ref: CommitRef) -> StoredCommit:
        """The commit a ref names: an id or a branch, then ^ (parent) and ~N (Nth ancestor) steps."""
        base, back = refs.parse(ref.ref)
        self._check_repo(tx, ref.repo)
        commit_id = tx.get_branch(ref.repo, base)
        if commit_id is None:
            commit_id = base
        commit = tx.get_commit(ref.repo, commit_id)
        if commit is None:
            raise NotFound(f"no commit or branch {base!r} in repo {ref.repo!r}")
        for _ in range(back):
            if not commit.info.parent:
                raise NotFound(f"{ref} goes back past the first commit of {ref.repo!r}")
            commit = tx.get_commit(ref.repo, commit.info.parent)
        return commit

    def _open_commit(self, tx: Tx, ref: CommitRef) -> StoredCommit:
        commit = self._resolve(tx, ref)
        if commit.info.is_finished:
            raise FailedPrecondition(
                f"commit {commit.info.id} in {ref.repo!r} is finished and cannot change; "
                f"start a new one (pfs start-commit {ref.repo} {commit.info.branch})"
            )
        return commit

    def _entry(self, tx: Tx, commit: StoredCommit, path: str, ref: CommitRef) -> Entry:
        entry = self.trees.lookup(tx, _root(commit), path)
        if entry is None:
            raise NotFound(f"file {path!r} not found in {ref}")
        return entry

    def _existing_chunks(
        self, tx: Tx, root: Entry, directories: dict[str, dict[str, Entry]], written: dict[str, list[ChunkRef]],
        path: str,
    ) -> tuple[list[ChunkRef], Entry | None]:
        """The chunks PATH holds so far: those WRITTEN in this call, or those in ROOT's tree (looked up a
        directory at a time: its entries are kept in DIRECTORIES), with the stored file that holds them (None
        for none, or for those written in this call)."""
        if path in written:
            return written[path], None
        parent, _, name = path.rpartition("/")
        if parent not in directories:
            node = self.trees.lookup(tx, root, parent)
            directories[parent] = self.trees.entries(tx, node.address) if node is not None and node.is_dir else {}
        entry = directories[parent].get(name)
        if entry is None:
            return [], None
        if entry.is_dir:
            raise FailedPrecondition(f"cannot write file {path!r}: it is a directory")
        return list(self.trees.file_chunks(tx, entry)), entry

    def _write_tree(self, tx: Tx, commit: StoredCommit, edit: Edit) -> StoredCommit:
        new_root = self.trees.apply(tx, commit.tree, edit)
        tree = None if new_root.address == EMPTY_TREE else new_root.address  # no files: no root tree, as always
        commit = StoredCommit(dataclasses.replace(commit.info, size_bytes=new_root.size), tree)
        tx.update_commit(commit)
        return commit


def _check_unread(tx: Tx, what: str, reads: Callable[[InputSpec], bool], command: str) -> None:
    """FailedPrecondition if a pipeline has an input that READS (WHAT, which `pfs COMMAND` deletes): it could make
    no job without it, as 1.3 refused too; COMMAND --force deletes it all the same."""
    readers = [p.name for p in tx.list_pipelines() if any(reads(i) for i in p.spec.inputs)]
    if readers:
        raise FailedPrecondition(f"{what} is an input of pipeline {', '.join(readers[:5])}"
                                 f"{', ...' if len(readers) > 5 else ''}, which could make no job without it: delete "
                                 f"or update those first, or delete it all the same with pfs {command} --force")


def _no_repo(name: str) -> NotFound:
    """A repo that is not there; a name no repo can have is said to be that (create-repo would refuse it too)."""
    names.check_repo(name[:names.MAX_NAME + 1])
    return NotFound(f"repo {name!r} not found; create it with `pfs create-repo {name}`")


class _Reading:
    """The transaction a listing reads through now: its walk, suspended between batches, goes on in the next."""

    now: Tx

    def __getattr__(self, name: str):
        return getattr(self.now, name)


def _check_limit(limit: int) -> None:
    if not 0 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit {limit} is out of range: 0 (no limit) to {MAX_LIMIT}")


def _normalized(write: FileWrite) -> FileWrite:
    path = paths.normalize(write.path)
    return write if path == write.path else dataclasses.replace(write, path=path)


def _root(commit: StoredCommit) -> Entry:
    return Entry("", True, commit.tree or b"", commit.info.size_bytes)


def _checked(batch: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    for addr, frame in batch:
        frames.check(frames.check_address(addr), frame)
    return batch


def _check_description(what: str, text: str) -> None:
    """InvalidArgument, saying what is wrong with WHAT, where TEXT is longer than MAX_DESCRIPTION or holds a NUL
    (which PostgreSQL's text cannot: refused on every store alike)."""
    if len(text) > MAX_DESCRIPTION:
        raise InvalidArgument(f"{what} is {len(text)} characters long; at most {MAX_DESCRIPTION} are allowed")
    if "\0" in text:
        raise InvalidArgument(f"{what} holds a NUL character, which no description may")

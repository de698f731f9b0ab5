"""The tree a mount shows: /<repo>/<branch or commit id>/<files of that commit>; or one commit's files; or a
worker's inputs, /<name>/<files of its commit> for each (one mount serves them all).

Only finished commits are shown (a branch shows its newest finished commit),
so everything inside a commit directory is immutable: its inodes are derived
from (repo, commit, path) and its attributes and pages can be cached for
good. The levels above (repos, branches, commits) are listed again after a
short time to live, so new repos and commits appear without remounting and
a branch directory follows its head (and is listed again only when it moves).

A directory of a commit is listed with everything below it, in one call of
up to PREFETCH_ENTRIES entries: a walk of a commit's tree, or a lookup of
every file in it, then costs one call instead of one per directory. A map
shard's files show only their blocks in the worker's share of the commit's
bytes, placed from the sizes the listings give: that costs no call either.
"""

import bisect
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import xxhash

from pfs.client import Client
from pfs.core import paths, refs
from pfs.core.errors import DataLoss, InvalidArgument, NotFound
from pfs.core.model import ChunkRef, CommitInfo, CommitRef, FileInfo
from pfs.core.shard import Shard
from pfs.vfs.chunks import DEFAULT_CACHE_BYTES, ChunkCache
from pfs.vfs.direct import DirectReader

ROOT_INODE = 1
LISTING_TTL = 1.0  # seconds before repos, branches and commits are listed again
READ_AHEAD = 8  # chunks fetched ahead of a reader...
READ_AHEAD_BYTES = DEFAULT_CACHE_BYTES // 4  # ...up to this many bytes, however large the chunks
LOCATE_AHEAD = 1024  # chunks a direct reader is told a reader goes on to (it may locate them in one call)
NEXT_FILES = 64  # files after the one being read whose chunks are fetched with it...
NEXT_FILES_BYTES = 8 << 20  # ...up to this many bytes
PREFETCH_ENTRIES = 20_000  # entries below a directory listed with it: its subdirectories then cost no call
MAX_LISTED = 100_000  # entries kept in listings (about 75 MB); the least recently used are listed again if looked at


@dataclass(frozen=True)
class View:
    """How a commit's files are shown: only SHARD's part, and with SINCE (an earlier commit of the repo) only what
    changed after it (see Client.list_files for INCREMENTAL)."""

    shard: Shard = Shard()
    since: str = ""
    incremental: str = "diff"


@dataclass(slots=True)  # a mount may hold many: no __dict__ each
class Node:
    """A directory or file of the mount."""

    inode: int
    name: str
    kind: str  # root | inputs (the root of a worker's inputs) | repo | ref (a branch or commit directory) | dir | file
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    repo: str = ""
    commit: str = ""  # the commit a ref, dir or file belongs to
    path: str = ""  # inside the commit
    branch: str = ""  # for a ref that names a branch
    chunks: list[ChunkRef] = field(default_factory=list, repr=False)
    offsets: list[int] = field(default_factory=list, repr=False)  # where each chunk starts
    parent: int = 0  # the directory listing this node, and its place there
    index: int = 0
    told: int = 0  # a file's chunks a direct reader has been told a reader goes on to (expect)
    start: int = 0  # a directory's place in its commit's bytes laid end to end in path order (see Shard.blocks)...
    total: int = 0  # ...and their count
    view: View = View()  # how the commit a ref, dir or file belongs to is shown

    @property
    def immutable(self) -> bool:
        """Never changes: everything inside a commit, a directory named by commit id, and a worker's inputs."""
        return self.kind in ("inputs", "dir", "file") or (self.kind == "ref" and not self.branch)


@dataclass
class _Listing:
    expires: float
    children: dict[str, Node]  # by name, in name order
    order: list[Node]
    commit: str  # the commit whose directory this lists ("" above the commits)


def inode_of(*parts: str) -> int:
    """A stable inode number for a node, the same across remounts."""
    return 2 + xxhash.xxh3_64_intdigest("\0".join(parts).encode()) % (2**63 - 2)


class RepoTree:
    """All repos of a server as a tree, each commit seen through VIEW; or only COMMIT's files; or INPUTS, each
    commit in its own view at the name it is given (a worker's inputs)."""

    def __init__(self, client: Client, view: View = View(), direct: DirectReader | None = None,
                 commit: CommitInfo | None = None, inputs: dict[str, tuple[CommitInfo, View]] | None = None) -> None:
        self.client = client
        self.view = view
        self.direct = direct  # a reader of the server's chunk store without it, where this client has one
        self.cache = ChunkCache(self._fetch)
        # told (directory inode, names) whose kernel entries are out of date: the mount sets it
        self.on_stale: Callable[[int, list[str]], None] = lambda inode, names: None
        root = Node(ROOT_INODE, "", "root", True, mtime=time.time())
        if commit is not None:
            root = self._ref_node(commit, "", "", view)
            root.inode = ROOT_INODE
        self._nodes: dict[int, Node] = {ROOT_INODE: root}  # what the kernel has been given...
        self._lookups: dict[int, int] = {}  # ...and how many times (its lookup count), until it forgets them
        self._listings: OrderedDict[int, _Listing] = OrderedDict()  # least recently used first
        self._listed = 0  # entries in self._listings
        self._lock = threading.Lock()
        self._inputs = [self._ref_node(c, name, "", v, inode_of("input", name)) for name, (c, v) in
                        (inputs or {}).items()]
        if inputs is not None:
            root.kind = "inputs"

    # -- the operations a filesystem needs

    def getattr(self, inode: int) -> Node:
        with self._lock:
            node = self._nodes.get(inode)
        if node is None:
            raise NotFound(f"no inode {inode}")
        return node

    def lookup(self, parent: int, name: str) -> Node:
        """The entry NAME of the directory PARENT, remembered (see remember()). A branch or commit of a repo whose
        listing is out of date is looked up alone: listing it again lists every commit of the repo."""
        node = self.getattr(parent)
        if node.kind == "repo" and self._fresh_listing(parent) is None:
            return self.remember([self._ref(node.repo, name, parent)])[0]
        return self.remember([_child(self._listing(parent), parent, name)])[0]

    def lookup_cached(self, parent: int, name: str) -> Node | None:
        """The same as lookup() when the parent's listing is fresh (it never blocks); else None."""
        children = self._fresh_listing(parent)
        return None if children is None else self.remember([_child(children, parent, name)])[0]

    def readdir(self, inode: int) -> list[Node]:
        """The entries of the directory INODE, not remembered: remember() those handed to the kernel."""
        return list(self._listing(inode).values())

    def remember(self, nodes: list[Node]) -> list[Node]:
        """NODES, known by inode (getattr, read) until the kernel forgets them as often as it was given them."""
        with self._lock:
            for n in nodes:
                self._nodes[n.inode] = n
                self._lookups[n.inode] = self._lookups.get(n.inode, 0) + 1
        return nodes

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped COUNT of the times it was given INODE; at none left, it is not known by inode."""
        with self._lock:
            left = self._lookups.pop(inode, 0) - count
            if left > 0:
                self._lookups[inode] = left
            elif inode != ROOT_INODE:
                self._nodes.pop(inode, None)

    def entry_ttl(self, parent: Node, node: Node, short: float, long: float) -> float:
        """How long the kernel may keep the name NODE in PARENT: names in a branch directory move with it."""
        return long if node.immutable and not parent.branch else short

    def read(self, inode: int, offset: int, size: int) -> bytes | memoryview:
        """SIZE bytes of the file at OFFSET (fewer at its end): a view of a cached chunk where they lie in one.
        Blocking; the mount's handler (pfs.fuse.ops) awaits the same fetches instead."""
        views = pieces(self.read_chunks(inode, offset, size))
        return views[0] if len(views) == 1 else b"".join(views)

    def _prefetch_next_files(self, node: Node) -> None:
        """Fetches the files after NODE in its directory (readers of small files go in order), many in one call:
        for direct reads, one GET of a pack, and the reader never waits."""
        with self._lock:
            listing = self._listings.get(node.parent)
        if listing is None:
            return
        order, first = listing.order, node.index + 1
        ahead: list[Node] = []
        size = 0
        for sibling in order[first : first + NEXT_FILES]:
            ahead.append(sibling)
            size += sibling.size
            if size > NEXT_FILES_BYTES:
                break
        # fetched in one call once the reader is halfway through those fetched before (the middle is not held):
        # for direct reads, one GET of a pack serves many files, and one LocateChunks call locates them all
        middle = ahead[len(ahead) // 2].chunks if ahead else []
        if not ahead or (middle and all(self.cache.holds(c) for c in middle)):
            return
        if self.direct:
            self.direct.expect(itertools.islice((c for k in range(first, len(order)) for c in order[k].chunks),
                                                LOCATE_AHEAD))
        self.cache.prefetch(c for f in ahead for c in f.chunks)

    def read_chunks(self, inode: int, offset: int, size: int) -> list[tuple[bytes | Future, int, int]]:
        """The chunks a read of SIZE bytes at OFFSET lies in, in order, and the part of each it reads (start, end):
        each chunk's bytes if cached, else the future of its fetch (started now, those missing in one call).

        It never blocks. The reader waits for the futures and reads their results (ChunkCache.get); the chunks
        after these are fetched ahead, READ_AHEAD of them or READ_AHEAD_BYTES, whichever is fewer."""
        node = self.getattr(inode)
        chunks, offsets = node.chunks, node.offsets
        end = min(offset + size, node.size)
        i = max(bisect.bisect_right(offsets, offset) - 1, 0)
        j = bisect.bisect_left(offsets, end, lo=i) if end > offset else i
        if self.direct and i + READ_AHEAD > node.told:  # told LOCATE_AHEAD chunks at a time: located in one call
            node.told = i + LOCATE_AHEAD  # (before the first is fetched: the reads at once share that call)
            self.direct.expect(chunks[i : i + LOCATE_AHEAD])
        read = [(c, max(offset - offsets[k], 0), min(end - offsets[k], chunks[k].size))
                for k, c in zip(range(i, j), self.cache.get(chunks[i:j]))]
        # topped up as the reader moves on: each new chunk a fetch of its own, so chunks come back one by one
        # while the next are decompressed
        ahead, k = 0, j
        while k < len(chunks) and k < j + READ_AHEAD and (k == j or ahead + chunks[k].size <= READ_AHEAD_BYTES):
            ahead += chunks[k].size
            k += 1
        self.cache.prefetch(chunks[j:k])
        if offset == 0:
            self._prefetch_next_files(node)
        return read

    def close(self) -> None:
        """Stops the chunk fetches and lets go of the server's chunk store."""
        self.cache.close()
        if self.direct:
            self.direct.close()

    # -- listings

    def _listing(self, inode: int) -> dict[str, Node]:
        node = self.getattr(inode)
        if not node.is_dir:
            raise NotFound(f"{node.name!r} is not a directory")
        fresh = self._fresh_listing(inode)
        if fresh is not None:
            return fresh
        with self._lock:
            listing = self._listings.get(inode)
        entries, below = self._list(node)
        children = self._keep(node, entries)
        for directory, its_entries in below:
            self._keep(directory, its_entries)
        if listing is not None and node.kind == "ref":
            moved = [name for name, old in listing.children.items() if children.get(name) != old]
            if moved:
                self.on_stale(inode, moved)
        return children

    def _keep(self, node: Node, entries: list[Node]) -> dict[str, Node]:
        """Records ENTRIES as the listing of the directory NODE; returns them by name."""
        order = sorted(entries, key=lambda n: n.name)
        for i, child in enumerate(order):
            child.parent, child.index = node.inode, i
        children = {n.name: n for n in order}
        expires = float("inf") if node.immutable else time.monotonic() + LISTING_TTL
        with self._lock:
            old = self._listings.pop(node.inode, None)
            self._listed += len(order) - (len(old.order) if old else 0)
            self._listings[node.inode] = _Listing(expires, children, order, node.commit)
            while self._listed > MAX_LISTED and len(self._listings) > 1:
                self._listed -= len(self._listings.popitem(last=False)[1].order)
        return children

    def _fresh_listing(self, inode: int) -> dict[str, Node] | None:
        """The listing of INODE unless it is out of date: a branch directory's holds while its head stays."""
        with self._lock:
            listing, node = self._listings.get(inode), self._nodes.get(inode)
            if listing is not None:
                self._listings.move_to_end(inode)
        if listing is None or node is None:
            return None
        if listing.expires > time.monotonic() or (node.commit and listing.commit == node.commit):
            return listing.children
        return None

    def _list(self, node: Node) -> tuple[list[Node], list[tuple[Node, list[Node]]]]:
        """NODE's entries, and those of the directories below it that came in the same call."""
        if node.kind == "root":
            return [
                Node(inode_of("repo", r.name), r.name, "repo", True, r.size_bytes, r.created, repo=r.name)
                for r in self.client.list_repos()
            ], []
        if node.kind == "repo":
            return self._refs(node.repo), []
        if node.kind == "inputs":
            return self._inputs, []
        return self._files(node)

    def _refs(self, repo: str) -> list[Node]:
        """A directory per branch (its newest finished commit) and per finished commit."""
        commits = [c for c in self.client.list_commits(repo) if c.is_finished]
        by_id = {c.id: c for c in commits}
        nodes = [self._ref_node(c, c.id, "", self.view) for c in commits]
        for branch in self.client.list_branches(repo):
            head = self._finished_head(repo, branch.head, by_id)
            if head is not None:
                nodes.append(self._ref_node(head, branch.name, branch.name, self.view))
        return nodes

    def _ref(self, repo: str, name: str, parent: int) -> Node:
        """The directory NAME of REPO as _refs() shows it: a branch (its newest finished commit), or a finished
        commit by id; found with a lookup of it alone."""
        try:
            base, back = refs.parse(name)
            commit = None if back else self.client.inspect_commit(CommitRef(repo, base))
        except (InvalidArgument, NotFound):
            commit = None
        if commit is not None and commit.id == name:
            found = self._ref_node(commit, commit.id, "", self.view) if commit.is_finished else None
        else:
            head = None if commit is None else self._finished_head(repo, commit.id, {commit.id: commit})
            found = None if head is None else self._ref_node(head, name, name, self.view)
        return _child({name: found} if found else {}, parent, name)

    def _finished_head(self, repo: str, head: str, known: dict[str, CommitInfo]) -> CommitInfo | None:
        """The newest finished commit from HEAD (an id) back, HEAD's if it is finished (an open head shows its
        newest finished ancestor): each commit as KNOWN has it, else asked for."""
        while head:
            commit = known.get(head) or self.client.inspect_commit(CommitRef(repo, head))
            if commit.is_finished:
                return commit
            head = commit.parent
        return None

    def _ref_node(self, commit: CommitInfo, name: str, branch: str, view: View, inode: int = 0) -> Node:
        if not inode:
            inode = inode_of("branch", commit.repo, name) if branch else inode_of("commit", commit.repo, commit.id)
        return Node(inode, name, "ref", True, _visible_size(view, commit.size_bytes), commit.finished,
                    repo=commit.repo, commit=commit.id, branch=branch, view=view)

    def _files(self, node: Node) -> tuple[list[Node], list[tuple[Node, list[Node]]]]:
        """The entries of a directory of a commit, and of the directories below it, in one call.

        The call stops after PREFETCH_ENTRIES entries; the directories it stopped inside
        are left to be listed when they are looked at (NODE itself at once).
        """
        listed = self._list_files(node, recursive=True, limit=PREFETCH_ENTRIES)
        last = listed[-1].path if len(listed) == PREFETCH_ENTRIES else None
        own = [f for f in listed if paths.parent(f.path) == node.path] if last is None else self._list_files(node)
        # a commit's bytes are its top-level entries' (as shown: with since, what changed)
        total = node.total if node.kind == "dir" else sum(f.size_bytes for f in own)
        found = self._placed(node, listed, total)
        if last is not None:  # the call stopped inside NODE
            found[node.path] = self._placed(node, own, total)[node.path]
        entries = found.pop(node.path)[1]
        return entries, [held for d, held in found.items() if last is None or not _holds(d, last)]

    def _placed(self, node: Node, listed: list[FileInfo], total: int) -> dict[str, tuple[Node, list[Node]]]:
        """The nodes this shard sees of LISTED, entries below the directory NODE (each directory followed by
        what it holds, in name order), by the path of the directory holding them (NODE, or one of LISTED).

        Each is placed where its bytes start among the TOTAL bytes of its commit laid end to end in that
        order, from the sizes of what comes before it (a directory's is all it holds): the place decides
        which blocks of a file a map shard sees (Shard.blocks).
        """
        found: dict[str, tuple[Node, list[Node]]] = {node.path: (node, [])}
        ends = {node.path: node.start}  # where the next entry of each directory starts
        for f in listed:
            parent = paths.parent(f.path)  # a directory comes before what it holds
            start = ends[parent]
            ends[parent] += f.size_bytes
            if f.is_dir:
                ends[f.path] = start
            if not node.view.shard.sees_entry(paths.components(f.path)[0]):  # a reduce shard's whole entries
                continue
            child = self._file_node(node, f, start, total)
            found[parent][1].append(child)
            if child.is_dir:
                found[f.path] = (child, [])
        return found

    def _list_files(self, node: Node, recursive: bool = False, limit: int = 0) -> list[FileInfo]:
        return list(self.client.list_files(CommitRef(node.repo, node.commit), node.path, with_chunks=True,
                                           since=node.view.since, incremental=node.view.incremental,
                                           recursive=recursive, limit=limit))

    def _file_node(self, listed: Node, f: FileInfo, start: int, total: int) -> Node:
        """The node of an entry F found below the directory LISTED of a commit, START bytes into its TOTAL."""
        name = f.path.rpartition("/")[2]
        view = listed.view
        inode = inode_of("file", listed.repo, listed.commit, str(view.shard), view.since, f.path)
        if f.is_dir:
            return Node(inode, name, "dir", True, _visible_size(view, f.size_bytes), listed.mtime,
                        repo=listed.repo, commit=listed.commit, path=f.path, start=start, total=total, view=view)
        chunks = view.shard.blocks(f.chunks, start, total)
        offsets, size = [], 0
        for c in chunks:
            offsets.append(size)
            size += c.size
        return Node(inode, name, "file", False, size, listed.mtime, repo=listed.repo, commit=listed.commit,
                    path=f.path, chunks=chunks, offsets=offsets, view=view)

    def _fetch(self, refs: list[ChunkRef]) -> Iterator[bytes]:
        """The chunks' bytes in order, each as soon as it is read (the reader waits for the first, not for all):
        from the server's store without it where this client may, else over gRPC."""
        found = iter(self.direct.read_many(refs) if self.direct else [None] * len(refs))
        for i, data in enumerate(found):
            if data is not None:
                yield data
                continue
            # the first chunk not read directly: the server is asked, in one call, for it and every other one
            rest = [data, *found]
            missing = [r for r, d in zip(refs[i:], rest) if d is None]
            remote = self.client.read_chunks(missing)
            for data in rest:
                if data is None:
                    data = next(remote, None)
                    if data is None:
                        raise DataLoss(f"the server sent fewer chunks than the {len(missing)} asked for")
                yield data
            return


def pieces(chunks: list[tuple[bytes | Future, int, int]]) -> list[memoryview]:
    """The parts of CHUNKS (RepoTree.read_chunks' answer) a read takes, each a view of its chunk's bytes; waits for
    any fetch not done yet."""
    return [memoryview(c.result() if isinstance(c, Future) else c)[start:end] for c, start, end in chunks]


def _visible_size(view: View, size: int) -> int:
    """A directory's size is its files' total, shown only where the view's shard sees them all."""
    return size if view.shard.method == "global" or view.shard.count == 1 else 0


def _holds(directory: str, path: str) -> bool:
    """Whether the directory at DIRECTORY ('' is the root) is PATH or holds it."""
    return not directory or path == directory or path.startswith(f"{directory}/")


def _child(children: dict[str, Node], parent: int, name: str) -> Node:
    node = children.get(name)
    if node is None:
        raise NotFound(f"no {name!r} in inode {parent}")
    return node

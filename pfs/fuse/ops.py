"""pyfuse3 handlers over a pfs.vfs tree: read-only, each blocking call on a worker thread.

pyfuse3 ends its loop, and so the mount for every reader, on any exception
but FUSEError; so every handler answers each error with an errno (see
_answered) and the loop serves the next request.
"""

import errno
import functools
import inspect
import logging
import os
import stat
from concurrent.futures import Future

import pyfuse3
import trio

from pfs.core.errors import NotFound, PfsError
from pfs.core.memory import WRITE_PIECE
from pfs.vfs.tree import Node, RepoTree, pieces

log = logging.getLogger(__name__)

LONG_TTL = 3600.0  # immutable: everything inside a commit
SHORT_TTL = 1.0  # repos, branches and the names in a branch directory
# A streaming mount (a worker's) drops a file's pages from the kernel's cache each time this many more of its bytes
# were read through it. A worker reads its input once; kept, the pages it read would take as much memory again as
# the input, every one a new page to find and fill (on a VM whose host takes back freed memory, each slow to fault
# in). Dropped, they are the pages the next reads fill. A file read again is read through the mount again.
DROP_BEHIND = 64 << 20
# A file up to this size whose bytes are at hand when it is opened is put in the kernel's page cache before the
# open is answered: its reader's reads then find its pages there and cost no request (a small file read costs a
# lookup, an open and a release, not a read too: in alternating runs, the cold read of 10,000 small files took
# 2.5-2.6 s against 3.0-3.2). The kernel's first read-ahead would ask for as much.
STORED_AT_OPEN = 1 << 20
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


NO_REPLY = {"forget"}  # requests the kernel wants no answer to: pyfuse3 ends its loop on any error they raise


def _answered(handler):
    """HANDLER raising only FUSEError: ENOENT for what is not there, EIO (logged) for any other error.

    A domain error is logged with its message; an error nobody expected (a bug,
    an OSError) with its type too, and its traceback at debug level. A handler
    in NO_REPLY raises nothing: its error is logged only.
    """

    @functools.wraps(handler)
    async def answered(self, *args):
        try:
            return await handler(self, *args)
        except Exception as err:
            code = _errno(handler.__name__, args, err)
            if handler.__name__ in NO_REPLY:
                return None
            raise pyfuse3.FUSEError(code) from None

    return answered


def _errno(name: str, args: tuple, err: Exception) -> int:
    """The errno that answers ERR, raised by the handler NAME for a request of ARGS; logged where it is EIO."""
    if isinstance(err, pyfuse3.FUSEError):
        return err.errno
    if isinstance(err, NotFound):
        return errno.ENOENT
    if isinstance(err, PfsError):
        log.warning("%s%s: %s", name, _shown(args), err)
    else:
        log.error("%s%s failed unexpectedly, answered EIO: %s: %s", name, _shown(args), type(err).__name__, err,
                  exc_info=log.isEnabledFor(logging.DEBUG))
    return errno.EIO


def _shown(args: tuple) -> tuple:
    """The arguments of a request worth a log line: inodes, handles, offsets, names (not contexts or tokens)."""
    return tuple(os.fsdecode(a) if isinstance(a, bytes) else a for a in args if isinstance(a, (int, str, bytes)))


def _every_handler_answered(cls):
    """Wraps each request handler of CLS (its public coroutine methods) in _answered."""
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _answered(method))
    return cls


async def _fetched(futures: list[Future]) -> None:
    """Returns once every one of FUTURES is done (woken by its fetch thread, not by one waiting for it); raises the
    first one's error."""
    token = trio.lowlevel.current_trio_token()
    for future in futures:
        if not future.done():
            done = trio.Event()
            future.add_done_callback(lambda _, done=done: _wake(token, done))
            await done.wait()
        future.result()


def _wake(token: trio.lowlevel.TrioToken, done: trio.Event) -> None:
    try:
        token.run_sync_soon(done.set)
    except trio.RunFinishedError:  # the mount ended while the chunk was fetched
        pass


@_every_handler_answered
class Operations(pyfuse3.Operations):
    def __init__(self, tree: RepoTree, streaming: bool = False) -> None:
        """Serves TREE; STREAMING, for a reader that reads each file once (see DROP_BEHIND)."""
        super().__init__()
        self.tree = tree
        self._streaming = streaming
        self._read_since_drop: dict[int, int] = {}  # streaming: bytes of each open file read since its last drop
        self._dropping: set[int] = set()  # files whose pages are being dropped
        self._limiter = trio.CapacityLimiter(16)  # blocking listings on threads: one slow call stalls no other
        self._dirs: dict[int, tuple[Node, list[Node]]] = {}  # open directory handles
        self._stored: set[int] = set()  # files whose bytes were put in the kernel's page cache (see STORED_AT_OPEN)
        self._storing = True  # until the kernel refuses a store
        self._opened: dict[int, int] = {}  # open handles of each file (a handle is its inode)
        self._next_fh = 0
        self._joins = bytearray()  # a read that spans chunks is copied here (see _joined)
        self._owner = os.getuid(), os.getgid()  # every entry's: the mount's user (a syscall each, so asked once)
        self.initialized = trio.Event()  # set when the kernel's INIT request is being answered

    def init(self):
        self.initialized.set()

    async def _call(self, fn, *args):
        """Runs a blocking vfs call on a worker thread."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _attr(self, node: Node, entry_ttl: float | None = None) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        a.st_mode = (stat.S_IFDIR | 0o555) if node.is_dir else (stat.S_IFREG | 0o444)
        a.st_nlink = 2 if node.is_dir else 1
        a.st_size = node.size
        a.st_blksize = WRITE_PIECE  # the buffer of cp and the like: reads of it, and writes of it elsewhere
        a.st_blocks = (node.size + 511) // 512
        a.st_uid, a.st_gid = self._owner
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = int(node.mtime * 1e9)
        a.attr_timeout = LONG_TTL if node.immutable else SHORT_TTL
        a.entry_timeout = a.attr_timeout if entry_ttl is None else entry_ttl
        return a

    async def getattr(self, inode, ctx=None):
        return self._attr(self.tree.getattr(inode))  # a dict lookup: no thread

    async def lookup(self, parent_inode, name, ctx=None):
        name = os.fsdecode(name)
        parent = self.tree.getattr(parent_inode)
        if name == ".":
            return self._attr(self.tree.remember([parent])[0])
        node = self.tree.lookup_cached(parent_inode, name)
        if node is None:  # the listing must be fetched
            node = await self._call(self.tree.lookup, parent_inode, name)
        return self._attr(node, self.tree.entry_ttl(parent, node, SHORT_TTL, LONG_TTL))

    async def opendir(self, inode, ctx):
        node = self.tree.getattr(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        entries = await self._call(self.tree.readdir, inode)
        self._next_fh += 1
        self._dirs[self._next_fh] = (node, entries)  # one listing per opendir, however many readdir calls
        return self._next_fh

    async def readdir(self, fh, start_id, token):
        # the offset of an entry is its place in the name-ordered listing, plus one
        parent, entries = self._dirs[fh]
        sent = []  # each entry sent counts as a lookup (readdirplus)
        for offset in range(start_id, len(entries)):
            node = entries[offset]
            attr = self._attr(node, self.tree.entry_ttl(parent, node, SHORT_TTL, LONG_TTL))
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name), attr, offset + 1):
                break
            sent.append(node)
        self.tree.remember(sent)

    async def releasedir(self, fh):
        del self._dirs[fh]

    async def forget(self, inode_list):
        for inode, count in inode_list:
            self.tree.forget(inode, count)
            self._stored.discard(inode)

    async def open(self, inode, flags, ctx):
        if flags & WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.tree.getattr(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if (node.immutable and 0 < node.size <= STORED_AT_OPEN and self._storing and inode not in self._stored
                and not self._opened.get(inode) and inode not in self._dropping):
            self._store(node)
        self._opened[inode] = self._opened.get(inode, 0) + 1
        return pyfuse3.FileInfo(fh=inode, keep_cache=node.immutable)

    def _store(self, node: Node) -> None:
        """Puts the bytes of the file NODE in the kernel's page cache if they are at hand; else starts their fetch
        (its reads wait for it). A file is stored once while the kernel knows it: pages it drops are read again.

        Only a file nobody has open is stored: a store waits for the pages a read holds, and a read waits for
        this loop, in which the store runs. Every read is of a file opened through the mount."""
        chunks = self.tree.read_chunks(node.inode, 0, node.size)
        if any(isinstance(c, Future) for c, _, _ in chunks):
            return
        try:
            pyfuse3.notify_store(node.inode, 0, self._joined(pieces(chunks)))
        except OSError as err:  # the reads ask for the bytes, as they would anyway
            log.debug("pages of inode %d not stored: %s", node.inode, err)
            self._storing = err.errno != errno.ENOSYS  # a kernel without stores
            return
        self._stored.add(node.inode)

    async def read(self, fh, off, size):
        # most reads find their chunks cached; the others wait for their fetches, on no thread of their own
        chunks = self.tree.read_chunks(fh, off, size)
        await _fetched([c for c, _, _ in chunks if isinstance(c, Future)])
        if self._streaming:
            self._drop_behind(fh, size)
        return self._joined(pieces(chunks))

    def _drop_behind(self, inode: int, size: int) -> None:
        """Counts SIZE bytes read of INODE; drops its pages from the kernel's cache once DROP_BEHIND were read."""
        read = self._read_since_drop.get(inode, 0) + size
        if read >= DROP_BEHIND and inode not in self._dropping:
            self._dropping.add(inode)
            trio.lowlevel.spawn_system_task(self._drop, inode)
            read = 0
        self._read_since_drop[inode] = read

    async def _drop(self, inode: int) -> None:
        """Drops INODE's pages, on a thread: the kernel waits for those being read, which this loop answers."""
        try:
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode, abandon_on_cancel=True)
        except Exception as err:  # no error ends the mount; an OSError: the kernel forgot the file, nothing is cached
            log.log(logging.DEBUG if isinstance(err, OSError) else logging.ERROR, "pages of inode %d not dropped: %s",
                    inode, err)
        finally:
            self._dropping.discard(inode)

    def _joined(self, pieces: list[memoryview]) -> memoryview | bytes:
        """PIECES as one buffer: the only one, or a copy in a buffer every read reuses, which is safe since pyfuse3
        sends a read's reply as soon as read returns, before any other request is handled."""
        if len(pieces) <= 1:
            return pieces[0] if pieces else b""
        size = sum(len(p) for p in pieces)
        if len(self._joins) < size:
            self._joins = bytearray(size)
        view, at = memoryview(self._joins), 0
        for p in pieces:
            view[at : at + len(p)] = p
            at += len(p)
        return view[:size]

    async def release(self, fh):
        self._read_since_drop.pop(fh, None)
        if self._opened[fh] > 1:
            self._opened[fh] -= 1
        else:
            del self._opened[fh]

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 1 << 20
        s.f_namemax = 255
        return s

    async def access(self, inode, mode, ctx):
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        return True

    async def _read_only(self, *args, **kwargs):
        raise pyfuse3.FUSEError(errno.EROFS)

    create = mkdir = mknod = symlink = link = unlink = rmdir = rename = setattr = write = _read_only
    setxattr = removexattr = _read_only

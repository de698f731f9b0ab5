"""The FUSE handlers (pfs.fuse.ops) against a fake tree: each error is an errno, and the next request is served.

pyfuse3 ends its loop, and the mount for every reader, on any exception but
FUSEError. The handlers run here on trio without a kernel, over FakeTree,
which fails in each way a tree can; one test mounts FakeTree for real to see
that a failed read leaves the mount serving.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import Future

import pyfuse3
import pytest
import trio

from conftest import stop_process
from pfs.core.errors import DataLoss, InvalidArgument, NotFound, PfsError, Unavailable
from pfs.core.ready import spawn, wait_ready
from pfs.fuse.ops import Operations
from pfs.vfs.tree import ROOT_INODE, Node, inode_of

FILES = {"good": b"good bytes\n", "other": b"other bytes\n"}


class FakeTree:
    """Stands in for RepoTree: a root directory holding FILES; a method named in `failing` raises what it maps to.

    A file whose contents are an exception fails its fetch with it (a file whose chunks cannot be fetched).
    """

    def __init__(self, files: dict[str, bytes | Exception]) -> None:
        self.files = files
        self.nodes = {ROOT_INODE: Node(ROOT_INODE, "", "root", True)}
        for name, data in files.items():
            size = 100 if isinstance(data, Exception) else len(data)  # not 0: the kernel reads no empty file
            node = Node(inode_of("file", name), name, "file", False, size)
            self.nodes[node.inode] = node
        self.failing: dict[str, BaseException] = {}
        self.fetched: set[int] = set()  # inodes whose bytes read_chunks gives at once
        self.on_stale = lambda inode, names: None

    def _fail(self, method: str) -> None:
        if method in self.failing:
            raise self.failing[method]

    def getattr(self, inode: int) -> Node:
        self._fail("getattr")
        if inode not in self.nodes:
            raise NotFound(f"no inode {inode}")
        return self.nodes[inode]

    def lookup(self, parent: int, name: str) -> Node:
        self._fail("lookup")
        found = [n for n in self.readdir(parent) if n.name == name]
        if not found:
            raise NotFound(f"no {name!r} in inode {parent}")
        return found[0]

    def lookup_cached(self, parent: int, name: str) -> Node | None:
        self._fail("lookup_cached")
        return None  # always fetched: lookup() runs

    def readdir(self, inode: int) -> list[Node]:
        self._fail("readdir")
        return [n for i, n in self.nodes.items() if i != ROOT_INODE] if inode == ROOT_INODE else []

    def remember(self, nodes: list[Node]) -> list[Node]:
        self._fail("remember")
        return nodes

    def forget(self, inode: int, count: int) -> None:
        self._fail("forget")

    def entry_ttl(self, parent: Node, node: Node, short: float, long: float) -> float:
        return short

    def read_chunks(self, inode: int, offset: int, size: int) -> list[tuple[bytes | Future, int, int]]:
        """The file's bytes once fetched; before, its fetch, done on a thread of its own as the chunk cache's are,
        which fails with what a failing "fetch" maps to, or what the file holds if that is an exception."""
        self._fail("read_chunks")
        data = self.files[self.getattr(inode).name]
        if inode in self.fetched:
            return [(data, offset, offset + size)]
        future: Future = Future()

        def fetch() -> None:
            error = self.failing.get("fetch", data if isinstance(data, Exception) else None)
            if error is not None:
                future.set_exception(error)
                return
            self.fetched.add(inode)
            future.set_result(data)

        threading.Thread(target=fetch).start()
        return [(future, offset, offset + size)]

    def close(self) -> None:
        pass


GOOD = inode_of("file", "good")
ERRORS = [
    (NotFound("gone"), errno.ENOENT),
    (PfsError("the server failed"), errno.EIO),
    (DataLoss("chunk 00 is corrupt"), errno.EIO),
    (Unavailable("cannot reach 127.0.0.1:1"), errno.EIO),
    (InvalidArgument("bad"), errno.EIO),
    (RuntimeError("generator raised StopIteration"), errno.EIO),
    (KeyError(7), errno.EIO),
    (OSError(errno.ENOSPC, "No space left on device"), errno.EIO),
    (ValueError("bad value"), errno.EIO),
    (AttributeError("'NoneType' object has no attribute 'x'"), errno.EIO),
]
# (handler, its arguments, the tree method made to fail)
REQUESTS = [
    ("getattr", (GOOD, None), "getattr"),
    ("lookup", (ROOT_INODE, b"good", None), "getattr"),
    ("lookup", (ROOT_INODE, b"good", None), "lookup_cached"),
    ("lookup", (ROOT_INODE, b"good", None), "lookup"),
    ("lookup", (ROOT_INODE, b".", None), "remember"),
    ("opendir", (ROOT_INODE, None), "getattr"),
    ("opendir", (ROOT_INODE, None), "readdir"),
    ("open", (GOOD, os.O_RDONLY, None), "getattr"),
    ("read", (GOOD, 0, 4096), "read_chunks"),
    ("read", (GOOD, 0, 4096), "fetch"),
]


def request(ops: Operations, handler: str, *args):
    return trio.run(getattr(ops, handler), *args)


def errno_of(ops: Operations, handler: str, *args) -> int:
    with pytest.raises(pyfuse3.FUSEError) as err:
        request(ops, handler, *args)
    return err.value.errno


def still_serves(ops: Operations) -> None:
    """The same Operations answers the requests after a failed one."""
    assert request(ops, "getattr", GOOD, None).st_size == len(FILES["good"])
    assert request(ops, "lookup", ROOT_INODE, b"other", None).st_ino == inode_of("file", "other")
    assert bytes(request(ops, "read", GOOD, 0, 4096)) == FILES["good"]


@pytest.mark.parametrize("handler, args, method", REQUESTS, ids=lambda x: x if isinstance(x, str) else "")
@pytest.mark.parametrize("error, expected", ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_each_error_of_the_tree_is_an_errno_and_the_next_request_is_served(handler, args, method, error, expected,
                                                                           caplog):
    tree = FakeTree(FILES)
    ops = Operations(tree)
    tree.failing[method] = error
    assert errno_of(ops, handler, *args) == expected
    if expected == errno.EIO:  # logged with its cause, on one line
        line = caplog.records[-1].getMessage()
        assert str(error) in line and handler in line and "\n" not in line
    del tree.failing[method]
    still_serves(ops)


@pytest.mark.parametrize("error", [e for e, _ in ERRORS], ids=[type(e).__name__ for e, _ in ERRORS])
def test_a_forget_that_fails_raises_nothing_and_the_next_request_is_served(error, caplog):
    """FORGET gets no answer: pyfuse3 would end its loop on any exception it raised, FUSEError too."""
    tree = FakeTree(FILES)
    ops = Operations(tree)
    tree.failing["forget"] = error
    assert request(ops, "forget", [(GOOD, 1)]) is None
    if not isinstance(error, NotFound):
        assert str(error) in caplog.records[-1].getMessage()
    del tree.failing["forget"]
    still_serves(ops)


def test_an_unknown_handle_is_eio_and_the_next_request_is_served():
    ops = Operations(FakeTree(FILES))
    assert errno_of(ops, "releasedir", 12345) == errno.EIO  # the KeyError of a handle never opened
    assert errno_of(ops, "readdir", 12345, 0, None) == errno.EIO
    still_serves(ops)


def test_errnos_of_the_handlers_own_checks():
    ops = Operations(FakeTree(FILES))
    assert errno_of(ops, "getattr", 999, None) == errno.ENOENT
    assert errno_of(ops, "lookup", ROOT_INODE, b"missing", None) == errno.ENOENT
    assert errno_of(ops, "opendir", GOOD, None) == errno.ENOTDIR
    assert errno_of(ops, "open", ROOT_INODE, os.O_RDONLY, None) == errno.EISDIR
    assert errno_of(ops, "open", GOOD, os.O_WRONLY, None) == errno.EROFS
    assert errno_of(ops, "mkdir", ROOT_INODE, b"d", 0o755, None) == errno.EROFS
    still_serves(ops)


def test_a_traceback_only_at_debug_level(caplog):
    tree = FakeTree(FILES)
    ops = Operations(tree)
    tree.failing["fetch"] = RuntimeError("boom")
    caplog.set_level("INFO", "pfs.fuse.ops")
    errno_of(ops, "read", GOOD, 0, 10)
    assert not caplog.records[-1].exc_info
    caplog.set_level("DEBUG", "pfs.fuse.ops")
    errno_of(ops, "read", GOOD, 0, 10)
    assert caplog.records[-1].exc_info


# A real mount of FakeTree, in a process of its own: file `bad` cannot be read, as when a fetch fails unexpectedly.
MOUNT_FAKE = textwrap.dedent("""
    import sys
    from pfs.core.ready import ready_fd, notify
    from pfs.fuse.mount import serve
    from test_fuse_ops import FakeTree

    mountpoint, fd = sys.argv[1], ready_fd(sys.argv[3])
    tree = FakeTree({"good": b"good bytes\\n", "bad": RuntimeError("the server sent 1 of 2 chunks")})
    serve(tree, mountpoint, on_mounted=lambda: notify(fd, mountpoint=mountpoint))
""")


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
                    reason="needs /dev/fuse and fusermount3")
def test_a_mount_answers_a_failed_read_with_eio_and_keeps_serving(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = open(tmp_path / "mount.log", "wb")
    proc, ready = spawn([sys.executable, "-c", MOUNT_FAKE, str(mnt)], stdout=log, stderr=log,
                        cwd=os.path.dirname(__file__))
    try:
        assert wait_ready(ready, 30) == {"mountpoint": str(mnt)}, (tmp_path / "mount.log").read_text()
        for _ in range(2):
            with pytest.raises(OSError) as err:
                (mnt / "bad").read_bytes()
            assert err.value.errno == errno.EIO
            assert (mnt / "good").read_bytes() == b"good bytes\n"
        assert proc.poll() is None
    finally:
        stop_process(proc, signal.SIGTERM, 15)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        log.close()
    assert "read(" in (tmp_path / "mount.log").read_text()
    assert "RuntimeError: the server sent 1 of 2 chunks" in (tmp_path / "mount.log").read_text()

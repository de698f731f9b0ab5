"""Uploading /pfs/out as a shard's output, while the command writes it: chunked here, only the chunks the server
lacks sent, files staged once the command has succeeded.

While the command runs, each file made under /pfs/out is read as it grows (shim/inotify.py says when it was
made or closed; a reader at the end of a file not closed yet looks again every WAIT), and its chunks are cut,
hashed and sent then (in batches, and whenever the reader has caught up with the command), so the upload overlaps
the command instead of following it. A file is taken as complete once a writer closed it, or the command ended;
chunk boundaries depend only on the bytes, so reading a file as it grows cuts it where reading it whole would.
Nothing is staged before the command has succeeded: then each file's bytes are hashed again against the chunks
sent for it, and a file that changed since (written again, truncated, replaced, written through mmap, or never
seen) is read again whole. So what is staged is what /pfs/out holds when the command ends, byte for byte, and
the events only decide how much of the work was done early. A failed command stages nothing (the chunks sent
are unreferenced, as those of an upload cut short).

A link in /pfs/out is output as what it names (the inputs are still mounted at the end): a file anywhere the
command may read, or a directory of an input, whole. Linking an input's files into /pfs/out is how 1.x pipelines
move or rename them without copying: a file of an input the command saw whole is output as the input stores it,
its chunks named and nothing read (one listing of its directory); any other is read through the link. A link
that names nothing the command can see, or a directory outside the inputs, fails the shard, naming it: left
out, it would be data lost without a word.
"""

import itertools
import os
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pfs.cli.output import size
from pfs.client import Client
from pfs.client.upload import Uploader
from pfs.core import paths, run_as
from pfs.core.errors import FailedPrecondition
from pfs.core.hashing import address
from pfs.core.model import ChunkRef, CommitRef, FileInfo, FileWrite, write_calls
from shim import inotify, pidns
from shim.logs import Logs

WAIT = 0.1  # seconds a reader at the end of a file not closed yet waits before it reads on (a close ends the wait)
# chunks of a file read and hashed at once when it is checked at the end (pread and BLAKE3 let go of the GIL): the
# check of a 1 GiB output, which nothing else overlaps, took 0.17-0.23 s on 2 cores against 0.33-0.37 s in turn
CHECK_THREADS = 2
# A command has its own of these (shim/pidns.py): a link into one is not this worker's to follow
OWN_DIRS = tuple(Path(d) for d in (*pidns.OWN_TMP_DIRS, pidns.OWN_SHM))


class Output:
    """/pfs/out (OUT) of one try at a shard: start() before the command, finish() or abandon() after it."""

    def __init__(self, client: Client, job_id: str, shard: int, attempt: int, out: Path, logs: Logs,
                 user: tuple[int, int] | None = None, inputs: Mapping[Path, CommitRef] | None = None) -> None:
        """USER: the uid and gid the command runs as, where not the worker's own: what it wrote is read as it may
        read it (run_as.files_as), so a link to a file it may not read is refused, not sent. INPUTS: where each
        input commit is mounted (until finish() is done), which a link in OUT may name a directory or file of."""
        self.client = client
        self.job_id, self.shard, self.attempt = job_id, shard, attempt
        self.out = out
        self._inputs = {Path(os.path.realpath(d)): ref for d, ref in (inputs or {}).items()}
        self._listings: dict[tuple[CommitRef, str], dict[str, FileInfo]] = {}  # input directories with links to
        self.logs = logs
        self._user = user
        self._sent: dict[str, FileWrite] = {}  # path under OUT -> the chunks sent for it
        self._uploader = Uploader(client, lambda writes: self._sent.update((w.path, w) for w in writes))
        self._made: deque[Path] = deque()  # files to read, in the order they were made
        self._closed: dict[Path, bool] = {}  # whether a writer closed the file
        self._ended = threading.Event()  # the command has ended: every file is complete
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._watcher: inotify.Watcher | None = None

    def start(self) -> None:
        """Starts reading what the command writes (where inotify is there; else all of it is read at the end)."""
        try:
            self._watcher = inotify.Watcher(self.out, self._event)
        except OSError as err:
            self.logs.line("shim", f"job-shim: output is read once the command ends: {err}")
            return
        self._thread = threading.Thread(target=self._read_early, name="output", daemon=True)
        self._thread.start()

    def finish(self) -> tuple[int, int]:
        """Stages every file and directory under OUT (in path order), as it is now; returns (plain bytes, bytes
        sent). Directories are staged too, so one the command left empty is in the output (as in 1.x)."""
        self._stop()
        with run_as.files_as(self._user):
            return self._finish()

    def _finish(self) -> tuple[int, int]:
        try:
            kind = stat.S_IFMT(os.lstat(self.out).st_mode)
        except FileNotFoundError:
            kind = None
        if kind != stat.S_IFDIR:  # what it holds would be nothing, or what a link names: refused, not made empty
            left = {None: "removed", stat.S_IFLNK: "a symbolic link"}.get(kind, "not a directory")
            raise FailedPrecondition(f"the command left {self.out} {left}; it must stay the directory it was "
                                     "given, holding the output")
        total = 0
        writes = []
        directories = []
        with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="output-check") as pool:
            for path, is_dir, linked in sorted(_entries(self.out, list(self._inputs), OWN_DIRS)):
                rel = self._name(path)
                if is_dir:
                    directories.append(FileWrite(rel, (), directory=True))
                    continue
                n = path.stat().st_size
                stored = self._stored(path, n) if linked else None
                if stored is not None:
                    self._sent[rel] = FileWrite(rel, stored.chunks)
                elif not self._intact(path, self._sent.get(rel), pool):
                    with open(path, "rb") as f:
                        self._uploader.put(rel, f)
                total += n
                writes.append(rel)
                self.logs.line("shim", f"output {rel} ({size(n)}{', as its input stores it' if stored else ''})")
        self._uploader.__exit__(None, None, None)  # as a `with` left: the files read again sent, recorded in _sent
        staged = directories + [self._sent[rel] for rel in writes]
        for run in write_calls(staged):
            self.client.put_shard_files(self.job_id, self.shard, self.attempt, run)
        sent = self._uploader.bytes_sent
        self.logs.line("shim", f"output: {size(total)} in all, {size(sent)} sent compressed (the chunks the server "
                                "had were not sent)")
        return total, sent

    def _stored(self, path: Path, seen: int) -> FileInfo | None:
        """The input's file PATH is a link to (or lies under a link to), where the command saw it whole (its
        shard's view holds all SEEN bytes of it: a view holds some of a file's chunks, in order); None otherwise."""
        target = Path(os.path.realpath(path))
        root = _within(target, self._inputs)
        if root is None:
            return None
        ref = self._inputs[root]
        inner = target.relative_to(root)
        key = (ref, "" if inner.parent == Path(".") else inner.parent.as_posix())
        if key not in self._listings:
            self._listings[key] = {Path(f.path).name: f for f in self.client.list_files(ref, key[1], with_chunks=True)}
        stored = self._listings[key].get(inner.name)
        return stored if stored is not None and not stored.is_dir and stored.size_bytes == seen else None

    def abandon(self) -> None:
        """Stops reading, and sending what was read (the command failed: nothing is staged)."""
        self._end()
        self._join()
        self._uploader.__exit__(RuntimeError, None, None)  # as a `with` left by an error: the stream is cancelled

    def _name(self, path: Path) -> str:
        """The path in the output of PATH, a file or directory under OUT; InvalidArgument (naming it) where a
        commit cannot hold it (a name that is not UTF-8, too long, too deep)."""
        name = path.relative_to(self.out).as_posix()
        paths.normalize(name)
        return name

    # -- while the command runs

    def _event(self, kind: str, path: Path) -> None:
        if kind == inotify.MADE:
            self._made.append(path)
            self._closed[path] = False
        else:  # closed, or gone: no more writes to wait for
            self._closed[path] = True

    def _read_early(self) -> None:
        try:
            with run_as.files_as(self._user):
                self._read_made()
        except BaseException as err:  # noqa: BLE001 - surfaced by finish()
            self._error = err

    def _read_made(self) -> None:
        """Reads each file made, in turn, until the command has ended and every one was read."""
        while not (self._ended.is_set() and not self._made):
            if not self._made:
                self._uploader.flush()  # nothing else to do: what was read goes to the server now
                self._watcher.pump(WAIT)
                continue
            path = self._made.popleft()
            f = _open_file(path)
            if f is None:
                continue
            with f:
                self._uploader.put(self._name(path), _Growing(self, path, f))

    def _stop(self) -> None:
        """Waits for what is being read early, and sends it: its chunks stored, recorded in _sent."""
        self._end()
        error = self._join()
        if error is not None:
            raise error
        self._uploader.flush()

    def _end(self) -> None:
        """The command has ended: the early reader reads what is left, without waiting for news any more."""
        self._ended.set()
        if self._watcher is not None:
            self._watcher.wake()

    def _join(self) -> BaseException | None:
        """Stops the early reader (once the command ended, it reads what is left to the end); what it failed with."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        error, self._error = self._error, None
        return error

    def _complete(self, path: Path) -> bool:
        """Whether nothing more is to be waited for in the file at PATH: a writer closed it (or it is gone), or the
        command ended. A file written again after that is found changed at the end, and read again whole (finish)."""
        return self._closed.get(path, True) or self._ended.is_set()

    def _wait(self) -> None:
        """Waits, at the end of a file not closed yet, until it may hold more: WAIT seconds, or until news (a close,
        a file made, the command's end)."""
        self._watcher.pump(WAIT)

    def _intact(self, path: Path, sent: FileWrite | None, pool: ThreadPoolExecutor) -> bool:
        """Whether the file at PATH holds exactly the chunks SENT for it: those of a file of several are read and
        hashed on POOL."""
        if sent is None or path.stat().st_size != sum(c.size for c in sent.chunks):
            return False
        with open(path, "rb", buffering=0) as f:
            def holds(chunk: ChunkRef, offset: int) -> bool:
                data = os.pread(f.fileno(), chunk.size, offset)
                return len(data) == chunk.size and address(data) == chunk.address

            offsets = itertools.accumulate((c.size for c in sent.chunks), initial=0)
            # each chunk looked at (no read left running) before the file is closed
            return all(list((pool.map if len(sent.chunks) > 1 else map)(holds, sent.chunks, offsets)))


class _Growing:
    """A file the command may still be writing, read to its end: at the end of what is there, it reads on every
    WAIT until a writer closed it, or the command ended."""

    def __init__(self, output: Output, path: Path, f) -> None:
        self._output = output
        self._path = path
        self._f = f

    def readinto(self, view) -> int:
        while True:
            complete = self._output._complete(self._path)
            n = self._f.readinto(view)  # after looking: what was written before the close is there to read
            if n or complete:
                return n
            self._output._wait()


def _open_file(path: Path):
    """PATH opened for reading if it is a regular file (not a fifo, whose open would wait for a writer, nor a
    link); None otherwise, or if it is gone: the end finds what is there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return open(fd, "rb")


def _entries(top: Path, inputs: Sequence[Path], own: Sequence[Path],
             linked: bool = False) -> Iterator[tuple[Path, bool, bool]]:
    """(path, is_dir, linked) of each directory and regular file below TOP, links followed: to a file, or to a
    directory within INPUTS (walked whole, under the link's name); LINKED where the path is a link or lies under
    one (only such a path can be an input's file). Sockets, fifos and the like are not output. A link naming
    nothing the command can see, into OWN (the command's own /tmp and the like, which this worker does not see),
    or to a directory elsewhere (/, say, or one of TOP's own), is FailedPrecondition."""
    with os.scandir(top) as it:
        entries = list(it)
    for entry in entries:
        path = Path(entry.path)
        is_link = linked or entry.is_symlink()
        if entry.is_symlink():
            target = Path(os.path.realpath(path))
            if (theirs := _within(target, own)) is not None:
                raise FailedPrecondition(f"{path} is a link to {os.readlink(path)}, in the command's own {theirs}, "
                                         "which is not output through a link: copy the file into /pfs/out")
            try:
                mode = os.stat(path).st_mode
            except OSError as err:
                raise FailedPrecondition(f"{path} is a link to {os.readlink(path)}, which the command cannot see: "
                                         f"{err.strerror}") from None
            if stat.S_ISDIR(mode) and _within(target, inputs) is None:
                raise FailedPrecondition(f"{path} is a link to the directory {target}: only links to files, or to "
                                         "the inputs' directories, are output")
        else:
            mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            yield path, True, is_link
            yield from _entries(path, inputs, own, is_link)
        elif stat.S_ISREG(mode):
            yield path, False, is_link


def _within(target: Path, roots: Iterable[Path]) -> Path | None:
    """The one of ROOTS (directories) that TARGET, a real path, is or lies under; None if none."""
    return next((root for root in roots if root == target or root in target.parents), None)

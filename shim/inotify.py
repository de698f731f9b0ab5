"""What happens under a directory tree, from Linux's inotify: files made, closed, gone (libc through ctypes: the
standard library has no inotify, and this is all of it the worker needs).

Writes are not watched (no IN_MODIFY): the kernel makes an event of every write(), which costs a writer of small
pieces more than its writes do (512 MiB in tr's 8 KiB writes: 0.32 CPU s unwatched, 0.57-0.76 s watched, and
0.4 s more for the reader of the 33,000 events). A reader of a growing file looks again now and then instead.

A watch covers one directory, so each directory made under the tree is watched as it appears, and what was
made in it before its watch began is reported as made (scanned). Events are hints, never the truth: the
kernel drops them when its queue overflows, and a file written through mmap makes none. What reads them must
check what it finds (shim/output.py verifies every byte it sent).
"""

import ctypes
import os
import select
import struct
from collections.abc import Callable
from pathlib import Path

from pfs.core.errors import FailedPrecondition

IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_ISDIR = 0x40000000
MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name, NUL-padded
READ_SIZE = 64 << 10

# what a watcher is told: made (a file, created or moved in), closed (by one writer), gone
MADE, CLOSED, GONE = "made", "closed", "gone"


class Watcher:
    """Watches the tree under ROOT; pump() reads what happened and calls ON_EVENT(kind, path) for each file."""

    def __init__(self, root: Path, on_event: Callable[[str, Path], None]) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise FailedPrecondition(f"cannot watch {root}: inotify: {os.strerror(ctypes.get_errno())}")
        self._dirs: dict[int, Path] = {}
        self._on_event = on_event
        self._woken, self._waker = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watch(root)

    def close(self) -> None:
        for fd in (self._fd, self._woken, self._waker):
            os.close(fd)

    def wake(self) -> None:
        """Ends the wait of pump() now, or the next one (from any thread)."""
        try:
            os.write(self._waker, b"!")
        except BlockingIOError:  # woken many times already
            pass

    def pump(self, timeout: float) -> None:
        """Reports what happened, waiting up to TIMEOUT seconds for something to, or until wake()."""
        ready, _, _ = select.select([self._fd, self._woken], [], [], timeout)
        if self._woken in ready:
            while len(os.read(self._woken, 4096)) == 4096:
                pass
        while self._fd in ready:
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            wd, mask, _, length = HEADER.unpack_from(data, at)
            name = data[at + HEADER.size : at + HEADER.size + length].rstrip(b"\0")
            at += HEADER.size + length
            if wd not in self._dirs or not name:  # the queue overflowed (wd -1), or news of the directory itself
                continue
            path = self._dirs[wd] / os.fsdecode(name)
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self._watch(path)
            elif mask & (IN_CREATE | IN_MOVED_TO):
                self._on_event(MADE, path)
            elif mask & IN_CLOSE_WRITE:
                self._on_event(CLOSED, path)
            elif mask & (IN_DELETE | IN_MOVED_FROM):
                self._on_event(GONE, path)

    def _watch(self, directory: Path) -> None:
        """Watches DIRECTORY, and reports the files and watches the directories it already holds."""
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), MASK)
        if wd < 0:  # gone already, or the user's limit of watches: its files are found at the end
            return
        self._dirs[wd] = directory
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                self._watch(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                self._on_event(MADE, Path(entry.path))

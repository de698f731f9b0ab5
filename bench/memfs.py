"""A FUSE file system of one file whose bytes come from memory: what delivering bytes through FUSE costs alone.

bench/read.py reads it like the pfs mount's large file, to measure the part of a cold read through `pfs mount`
that is neither reading nor unpacking chunks: pyfuse3 and trio answering each request (as the mount does, with
the mount's read-ahead), the kernel copying each reply into the page cache, and the reader copying it out.

Run: python bench/memfs.py MOUNTPOINT NAME SIZE (in the foreground, until fusermount -u MOUNTPOINT).
"""

import errno
import os
import stat
import sys

import pyfuse3
import trio

from pfs.fuse.mount import read_ahead

FILE_INODE = pyfuse3.ROOT_INODE + 1
PATTERN = bytes(range(256)) * (8 << 12)  # 8 MiB: every reply is a view of it, as the mount's are of its chunks


class MemFs(pyfuse3.Operations):
    def __init__(self, name: str, size: int) -> None:
        super().__init__()
        self.name, self.size = os.fsencode(name), size
        self.initialized = trio.Event()

    def init(self):
        self.initialized.set()

    async def getattr(self, inode, ctx=None):
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o555, 2
        else:
            a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o444, 1, self.size
        a.attr_timeout = a.entry_timeout = 3600.0
        return a

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != self.name:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(FILE_INODE)

    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh, off, size):
        start = off % (len(PATTERN) // 2)
        return memoryview(PATTERN)[start : start + min(size, self.size - off)]


async def serve(ops: MemFs, mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_ahead_once_up, ops, mountpoint)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _read_ahead_once_up(ops: MemFs, mountpoint: str) -> None:
    await ops.initialized.wait()
    read_ahead(mountpoint)


def main() -> None:
    mountpoint, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ops = MemFs(name, size)
    pyfuse3.init(ops, mountpoint, set(pyfuse3.default_options) | {"fsname=pfs-bench-memfs", "ro"})
    try:
        trio.run(serve, ops, mountpoint)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()

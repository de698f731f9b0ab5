"""Process memory tuning for the data paths (CLI, server, shim).

Chunk-sized buffers come and go by the thousand. By default glibc hands
large blocks back to the kernel on free, and faulting fresh pages in costs
more than compressing them on these machines; keeping freed memory in the
heap makes the next chunk reuse it.

Files are written a WRITE_PIECE at a time (write_all): the kernel caches a write's bytes in folios as large as the
write, and a folio of 1 MiB or more is made of a block of memory the allocator found free at that size, which a
virtual machine's host may have taken back (free page reporting hands it free blocks of 2 MiB and more), so each
such page is faulted in again. 800 MB written 1 MiB at a time took 0.27 to 3.3 s of system time on these VMs,
256 KiB at a time 0.26 to 0.33 s: as fast as 1 MiB writes at their best, so where large folios are cheap, the
smaller writes cost nothing measurable.
"""

import ctypes
from typing import BinaryIO

WRITE_PIECE = 256 << 10

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> None:
    """Makes malloc reuse freed chunk-sized blocks instead of returning them (glibc only).

    libc is this process's own (ctypes.CDLL(None)): ctypes.util.find_library would run ldconfig, 14 ms of every
    command's start."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def release_freed_memory() -> None:
    """Hands the heap's free memory back to the kernel (glibc's malloc_trim), after a rare walk of the whole store
    (a collection, a check): kept (keep_freed_memory), its peak would stay the server's for good."""
    libc = ctypes.CDLL(None)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def write_all(f: BinaryIO, data: bytes | memoryview) -> None:
    """Writes DATA to F, a WRITE_PIECE at a time (see the module's docstring)."""
    view = memoryview(data)
    for at in range(0, len(view), WRITE_PIECE):
        f.write(view[at : at + WRITE_PIECE])

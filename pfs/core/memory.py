"""Process memory tuning for the data paths (CLI, server, shim).

Chunk-sized buffers come and go by the thousand. By default glibc hands
large blocks back to the kernel on free, and faulting fresh pages in costs
more than compressing them on these machines; keeping freed memory in the
heap makes the next chunk reuse it.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> None:
    """Makes malloc reuse freed chunk-sized blocks instead of returning them (glibc only)."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 256 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)

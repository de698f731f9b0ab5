"""A worker's own /pfs: a private mount namespace with the worker's workspace bound at /pfs.

How the local runner keeps workers apart on one machine: each sees its own
inputs and out at /pfs, and no mount of one is seen by another or by the
host. When the worker's processes end, their mounts go with the namespace.
"""

import ctypes
import os
from pathlib import Path

from pfs.core.errors import FailedPrecondition

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def enter(workspace: Path, root: Path) -> None:
    """Moves this process into a new mount namespace where WORKSPACE is seen at ROOT. Call before any thread starts."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        _fail("a private mount namespace (needs root or CAP_SYS_ADMIN)")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:  # nothing leaks back to the host
        _fail("private mounts")
    workspace.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)  # the empty mount point, the same for every worker
    if libc.mount(os.fsencode(workspace), os.fsencode(root), None, MS_BIND, None) != 0:
        _fail(f"binding {workspace} at {root}")


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    raise FailedPrecondition(f"cannot set up {what}: {os.strerror(err)}")

"""A worker's own /pfs: a private mount namespace, with the worker's workspace bound at /pfs where it has one.

How the local runner keeps workers apart on one machine: each sees its own
inputs and out at /pfs, and no mount of one is seen by another or by the
host. When the worker's processes end, their mounts go with the namespace.

A shim that is not root enters a user namespace too, whose uid 0 is its own
uid on the host: there it may bind /pfs and mount its inputs with FUSE, and
the command it runs has no privilege on the host beyond that uid's. Where
/pfs does not exist (only root can make it), the worker gets a root of its
own: a tmpfs holding the host's top-level entries, bound, and /pfs.

A worker without a workspace (in a container or a pod of its own) gets the
namespace too: its inputs are bound at /pfs/<name> (shim/mounts.py), and
binds made there go with it, however the worker ends.
"""

import ctypes
import os
from pathlib import Path

from pfs.core.errors import FailedPrecondition

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def enter(workspace: Path | None, root: Path) -> None:
    """Moves this process into a new mount namespace where WORKSPACE (if given) is seen at ROOT. Call before any
    thread starts."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        if libc.unshare(CLONE_NEWNS) != 0:
            _fail("a private mount namespace (needs root or CAP_SYS_ADMIN)")
    else:
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            _fail("a user namespace (are unprivileged user namespaces allowed here?)")
        try:  # uid and gid 0 in here are this process's own outside
            for name, line in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                Path("/proc/self", name).write_text(line)
        except OSError as err:
            raise FailedPrecondition(f"cannot set up a user namespace: {name}: {err.strerror}") from None
    _mount(libc, b"none", b"/", MS_REC | MS_PRIVATE, "private mounts")  # nothing leaks back to the host
    if workspace is not None:
        workspace.mkdir(parents=True, exist_ok=True)
    try:
        root.mkdir(parents=True, exist_ok=True)  # the empty mount point, the same for every worker
    except PermissionError:  # not root, and no /pfs yet
        if root.parent != Path("/") or workspace is None:
            raise FailedPrecondition(f"cannot make {root}: create the empty directory once, as root") from None
        _own_root(libc, workspace, root)
        return
    if workspace is None:
        return
    _mount(libc, os.fsencode(workspace), os.fsencode(root), MS_BIND, f"binding {workspace} at {root}")


def _own_root(libc: ctypes.CDLL, workspace: Path, root: Path) -> None:
    """Changes this process's root to a tmpfs (mounted on WORKSPACE) holding every top-level entry of the
    host's root, bound, and ROOT: WORKSPACE itself, still reached through the directory opened before."""
    cwd = os.getcwd()
    under = os.open(workspace, os.O_PATH | os.O_DIRECTORY)
    _mount(libc, b"tmpfs", os.fsencode(workspace), 0, "a root of its own", b"tmpfs", b"mode=0755")
    for entry in os.scandir("/"):
        path = workspace / entry.name
        if entry.is_symlink():  # /bin -> usr/bin, say
            path.symlink_to(os.readlink(entry.path))
            continue
        path.mkdir() if entry.is_dir() else path.touch()
        _mount(libc, os.fsencode(entry.path), os.fsencode(path), MS_BIND | MS_REC, f"binding {entry.path}")
    (workspace / root.name).mkdir()
    _mount(libc, f"/proc/self/fd/{under}".encode(), os.fsencode(workspace / root.name), MS_BIND,
           f"binding {workspace} at {root}")
    os.close(under)
    os.chroot(workspace)
    os.chdir(cwd)


def bind(source: str, target: str) -> None:
    """Shows the directory SOURCE at TARGET too (a bind mount: root, or CAP_SYS_ADMIN in this mount namespace)."""
    _mount(ctypes.CDLL(None, use_errno=True), os.fsencode(source), os.fsencode(target), MS_BIND,
           f"binding {source} at {target}")


def unbind(target: str) -> None:
    """Undoes bind() at TARGET, at once even where a process is still in it (it is detached, as umount -l does)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        raise FailedPrecondition(f"cannot unbind {target}: {os.strerror(ctypes.get_errno())}")


def _mount(libc: ctypes.CDLL, source: bytes, target: bytes, flags: int, what: str, fstype: bytes | None = None,
           data: bytes | None = None) -> None:
    if libc.mount(source, target, fstype, flags, data) != 0:
        _fail(what)


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    raise FailedPrecondition(f"cannot set up {what}: {os.strerror(err)}")

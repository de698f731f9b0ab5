"""Mounting and unmounting: pyfuse3.init, the trio loop, a clean unmount on Ctrl-C or SIGTERM."""

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from typing import NamedTuple

import pyfuse3
import trio

from pfs.core import tools
from pfs.core.errors import FailedPrecondition, InvalidArgument, NotFound
from pfs.fuse.ops import Operations
from pfs.vfs.tree import RepoTree

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FSNAME = "pfs"  # how /proc/mounts names our mounts
FUSE_NEEDS = ("in a container, FUSE takes privileged, or the /dev/fuse device and CAP_SYS_ADMIN (podman: --device "
              "/dev/fuse --cap-add SYS_ADMIN; Kubernetes: securityContext.privileged, or /dev/fuse from a device "
              "plugin's resource and capabilities.add SYS_ADMIN)")
READ_AHEAD_KB = 1024  # the kernel's default is 128: a sequential reader then costs 8x the requests


def check_mountpoint(mountpoint: str) -> None:
    if _in_mount_table(mountpoint):  # a live mount, or one whose process died (not even a directory then)
        raise FailedPrecondition(f"{mountpoint} is already a mount point; unmount it first (pfs unmount "
                                 f"{mountpoint})")
    if not os.path.isdir(mountpoint):
        raise NotFound(f"mount point {mountpoint} " + ("is not a directory" if os.path.lexists(mountpoint) else
                                                       f"does not exist; make it first (mkdir {mountpoint})"))
    if os.listdir(mountpoint):
        raise FailedPrecondition(f"mount point {mountpoint} is not empty")
    if not os.path.exists("/dev/fuse"):
        raise FailedPrecondition(f"/dev/fuse is missing: this machine (or container) has no FUSE; {FUSE_NEEDS}")
    try:  # a container given the node but not the device (a hostPath under cgroup v1's device list, say)
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as err:
        raise FailedPrecondition(f"cannot open /dev/fuse: {err.strerror}; {FUSE_NEEDS}") from None


def serve(tree: RepoTree, mountpoint: str, on_mounted=lambda: None, allow_other: bool = False,
          streaming: bool = False) -> None:
    """Mounts TREE at MOUNTPOINT and serves it until SIGINT or SIGTERM, then unmounts; with ALLOW_OTHER, other
    users may read it too (the files' modes let anyone read); STREAMING, for a reader that reads each file once
    (a worker: see ops.DROP_BEHIND)."""
    check_mountpoint(mountpoint)
    options = set(pyfuse3.default_options) | {f"fsname={FSNAME}", "ro"} | ({"allow_other"} if allow_other else set())
    ops = Operations(tree, streaming)
    # a signal before the loop listens still unmounts; its handler takes no lock (as Event.set would), since a
    # second signal can run it again inside the first, which would then wait on itself for ever
    stopped: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _: stopped.append(signum))
    _init(ops, mountpoint, options)
    tree.on_stale = _invalidate
    try:
        trio.run(_main, mountpoint, ops, stopped, on_mounted)
    finally:
        pyfuse3.close(unmount=True)
        tree.close()


def _init(ops: Operations, mountpoint: str, options: set[str]) -> None:
    """pyfuse3.init, whose failure is one line saying why: libfuse (or the fusermount3 it falls back on) prints
    its reason on stderr, which is caught here, and pyfuse3 raises only 'fuse_session_mount failed'."""
    with tempfile.TemporaryFile() as said:
        stderr = os.dup(2)
        os.dup2(said.fileno(), 2)
        try:
            pyfuse3.init(ops, mountpoint, options)
            failed = None
        except RuntimeError as err:
            failed = err
        finally:
            os.dup2(stderr, 2)
            os.close(stderr)
        said.seek(0)
        text = said.read().decode(errors="replace").strip()
    if failed is None:
        if text:  # a warning of a mount that worked: passed on
            print(text, file=sys.stderr)
        return
    why = " ".join(text.splitlines()[-1:]) or str(failed)
    raise FailedPrecondition(f"cannot mount at {mountpoint}: {why}; {FUSE_NEEDS}")


async def _up(mountpoint: str, ops: Operations, on_mounted) -> None:
    """Calls ON_MOUNTED once the kernel has the mount's INIT reply and its read-ahead is set: whoever is told
    may then move it (bind it elsewhere, unmount where it was mounted) and find it whole."""
    await ops.initialized.wait()  # this wakes once the loop gets back from answering INIT
    read_ahead(mountpoint)
    on_mounted()


def read_ahead(mountpoint: str) -> None:
    """Lets the kernel read ahead READ_AHEAD_KB per request: each request is a trip through Python.

    The setting is the mount's own (its backing device in /sys/class/bdi), gone
    when it unmounts; only root may change it, so others keep the default. The
    kernel sets it too when it takes the INIT reply, so it is made after that
    reply has gone, and without a request to this very mount: one made while
    the loop stops would never be answered.
    """
    device = _device(mountpoint)
    if device is None:
        return
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(f"{READ_AHEAD_KB}\n")
    except OSError as err:
        log.debug("read-ahead of %s left as it is: %s", mountpoint, err)


def _device(mountpoint: str) -> str | None:
    """MAJOR:MINOR of the newest mount at MOUNTPOINT (the mount itself is not looked at)."""
    absolute = os.path.abspath(mountpoint)
    point = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    devices = [m.device for m in _mount_table() if m.point == point]
    return devices[-1] if devices else None


def _invalidate(inode: int, names: list[str]) -> None:
    for name in names:
        pyfuse3.invalidate_entry_async(inode, os.fsencode(name), ignore_enoent=True)


async def _main(mountpoint: str, ops: Operations, stopped: list[int], on_mounted) -> None:
    try:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            if stopped:  # asked to stop while mounting
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_terminate_on, signals)
                nursery.start_soon(_up, mountpoint, ops, on_mounted)
                await pyfuse3.main()  # returns on terminate() or when unmounted from outside
                nursery.cancel_scope.cancel()
    finally:  # the loop ends, and the unmount follows: a stop signal now (a worker's, as its inputs' binds go and
        # the kernel ends the mount) would only be written to trio's wakeup socket as trio closes it, a traceback
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


async def _terminate_on(signals) -> None:
    async for _ in signals:
        pyfuse3.terminate()
        return


def mounts() -> list[str]:
    """Where pfs is mounted (fsname pfs), newest last."""
    return [m.point for m in _mount_table() if m.source == FSNAME and m.fstype.startswith("fuse")]


class _Mount(NamedTuple):
    point: str
    device: str  # MAJOR:MINOR
    fstype: str
    source: str


def _in_mount_table(mountpoint: str) -> bool:
    """Whether something is mounted at MOUNTPOINT, even a FUSE mount whose process is gone (which os.path.ismount
    cannot stat: 'Transport endpoint is not connected')."""
    point = os.path.realpath(mountpoint)
    return any(m.point == point for m in _mount_table())


def _mount_table() -> list[_Mount]:
    """This process's mounts, oldest first, from /proc/self/mountinfo (octal escapes undone)."""
    table = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            end = fields.index("-")  # optional fields come before it
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            table.append(_Mount(point, fields[2], fields[end + 1], fields[end + 2]))
    return table


def unmount(mountpoint: str) -> None:
    if not _in_mount_table(mountpoint):
        raise InvalidArgument(f"{mountpoint} is not mounted")
    done = subprocess.run([tools.require("fusermount"), "-u", mountpoint], capture_output=True, text=True)
    if done.returncode != 0:
        raise FailedPrecondition(f"cannot unmount {mountpoint}: {done.stderr.strip()}")

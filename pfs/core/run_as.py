"""Who a pipeline's command runs as: its transform's user, as 1.x wrote it: a user's name or uid, and :group.

The cluster's root may name anyone (its own command, on its own machines). A pipeline made by anyone else runs
its command by default as UNPRIVILEGED, or as a uid and gid given as numbers (a name is looked up only on the
worker, in the image, where it could be root) that no account or group of the server's machine has: never as
root, so it cannot read the server's data dir, nor as an account or group with rights of its own (shadow, disk,
postgres).
"""

import contextlib
import ctypes
import grp
import os
import pwd
import re
from collections.abc import Iterator

from pfs.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied

_ID = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10}"
USER = re.compile(rf"(?P<user>{_ID})(?::(?P<group>{_ID}))?")
UNPRIVILEGED = "65534"  # nobody's uid and gid on Debian and in most images
# The processes and threads a command run as another user may have at once, with every other process of its uid on
# the machine (RLIMIT_NPROC; shim/pidns.py): a fork bomb stops there, under the kernel's pid_max (32,768 on
# machines of up to 32 cores), and the machine, its server and the other users' work go on
MAX_PROCESSES = 4096
# The largest uid or gid: one more, (uid_t) -1, tells setuid and setgid to change nothing, so a command asked to
# run as it would run as the worker itself (root)
MAX_ID = 2**32 - 2


def check(user: str) -> None:
    """InvalidArgument unless USER ('' for the worker's own) is a user, and group, as a manifest writes them."""
    found = USER.fullmatch(user) if user else None
    if user and (found is None or any(i and i.isdigit() and int(i) > MAX_ID for i in found.groups())):
        raise InvalidArgument(f"manifest field transform.user: expected a user's name or uid (at most {MAX_ID}), "
                              f"and :group, such as 1000:1000, got {user[:40]!r}")


def for_creator(user: str, creator: str) -> str:
    """The user the command of CREATOR's pipeline runs as, for the USER its manifest asks for (creator '' is the
    cluster's root); PermissionDenied where a user who is not the root asks for a user that is, or may be, or for
    the ids of one of this machine's accounts or groups (uid 0; gid 42, shadow, which reads /etc/shadow)."""
    if not creator:
        return user
    if not user:
        return UNPRIVILEGED
    name, group = USER.fullmatch(user).groups()
    group = group or name  # as a worker resolves a uid of no account
    taken = _taken(int(name), int(group)) if name.isdigit() and group.isdigit() else "given as names"
    if taken:
        raise PermissionDenied(f"manifest field transform.user: {creator}'s pipeline may run its command only as "
                               f"numbers no account or group of this machine has, or as nobody ({UNPRIVILEGED}), "
                               f"not {user[:40]!r} ({taken})")
    return user


def _taken(uid: int, gid: int) -> str:
    """Which of this machine's accounts has UID, or which group GID, other than nobody and nogroup; '' if none."""
    for number, look_up, said in ((uid, pwd.getpwuid, "uid {} is {}'s"), (gid, grp.getgrgid, "gid {} is group {}'s")):
        if number != int(UNPRIVILEGED):
            try:
                return said.format(number, look_up(number)[0])
            except KeyError:
                pass
    return ""


def resolve(user: str) -> tuple[int, int]:
    """The uid and gid USER names here (names looked up in this machine's, or image's, /etc/passwd and group);
    the gid by default is the user's own, or the uid's number."""
    check(user)
    found = USER.fullmatch(user)
    name, group = found.group("user"), found.group("group")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not name.isdigit():
            raise InvalidArgument(f"transform.user: no user {name!r} here (give a uid instead)") from None
        uid = gid = int(name)
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidArgument(f"transform.user: no group {group!r} here (give a gid instead)") from None
    return uid, gid


@contextlib.contextmanager
def files_as(user: tuple[int, int] | None) -> Iterator[None]:
    """In this thread, files opened, listed and followed as USER (uid, gid) may, not as root: a worker reading what
    its command wrote (a link to the server's token is refused as it is to the command). USER None: as this process.

    Linux checks a thread's access to files against its file-system uid and gid (setfsuid, setfsgid: of the calling
    thread alone), and drops root's powers over files while that uid is not 0; the process's supplementary groups
    are root's own: drop_groups() first."""
    if user is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    old_gid = libc.setfsgid(user[1])
    old_uid = libc.setfsuid(user[0])
    try:
        if libc.setfsuid(-1) != user[0] or libc.setfsgid(-1) != user[1]:  # -1 changes nothing: what is in force
            raise FailedPrecondition(f"cannot read the command's output as uid {user[0]} and gid {user[1]}: not root")
        yield
    finally:
        libc.setfsuid(old_uid)
        libc.setfsgid(old_gid)


def drop_groups() -> None:
    """No supplementary groups for this process (root's are its own): what files_as checks is USER's uid and gid
    alone, as the command, run with none, has."""
    os.setgroups([])

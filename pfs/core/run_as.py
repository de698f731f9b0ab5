"""Who a pipeline's command runs as: its transform's user, as 1.x wrote it: a user's name or uid, and :group.

The cluster's root may name anyone (its own command, on its own machines). A pipeline made by anyone else runs
its command as a uid other than 0, given as a number (a name is looked up only on the worker, in the image,
where it could be root), or by default as UNPRIVILEGED: never as root, so it cannot read the server's data dir.
"""

import grp
import pwd
import re

from pfs.core.errors import InvalidArgument, PermissionDenied

_ID = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10}"
USER = re.compile(rf"(?P<user>{_ID})(?::(?P<group>{_ID}))?")
UNPRIVILEGED = "65534"  # nobody's uid and gid on Debian and in most images
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
    cluster's root); PermissionDenied where a user who is not the root asks for a user that is, or may be."""
    if not creator:
        return user
    if not user:
        return UNPRIVILEGED
    ids = USER.fullmatch(user).groups()
    if not all(i is None or (i.isdigit() and int(i) != 0) for i in ids):
        raise PermissionDenied(f"manifest field transform.user: {creator}'s pipeline may run its command only as "
                               f"a uid (and gid) given as numbers other than 0, such as 1000:1000, not {user[:40]!r}")
    return user


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

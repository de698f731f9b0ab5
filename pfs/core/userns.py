"""Whether an ordinary user's processes can have a /pfs of their own here: a user namespace and FUSE in it.

A worker of a server not run by root enters a user namespace (with its mount
namespace), in which it may bind its /pfs and mount its inputs with FUSE
(Linux 4.18 and later), as its own uid on the host. The machine can forbid
that; the server says so, naming the setting, before any worker fails on it.
"""

import os
from pathlib import Path

PROC = Path("/proc/sys")
FUSE = "/dev/fuse"
# a sysctl that is 0 where unprivileged user namespaces are off, and how to allow them
SETTINGS = {
    "kernel/unprivileged_userns_clone": "sysctl -w kernel.unprivileged_userns_clone=1",
    "user/max_user_namespaces": "sysctl -w user.max_user_namespaces=15000",
}


def unavailable() -> str | None:
    """Why the workers of this (non-root) process cannot have user namespaces with FUSE here; None if they can."""
    for setting, fix in SETTINGS.items():
        try:
            value = (PROC / setting).read_text().strip()
        except OSError:  # not this kernel's setting
            continue
        if value == "0":
            name = setting.replace("/", ".")
            return f"{name} is 0, so an ordinary user has no user namespaces (as root: {fix})"
    if not os.access(FUSE, os.R_OK | os.W_OK):
        return f"{FUSE} cannot be opened by uid {os.getuid()} (as root: chmod 0666 {FUSE}, its usual mode)"
    return None

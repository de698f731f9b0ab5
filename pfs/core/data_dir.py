"""Where a server on this machine keeps its data by default, the token file in it, and how calls carry the token.

One definition for the server (which makes them) and its clients (which read the token from there when
nothing else names one), so a local `pfs server` and `pfs` find each other with no settings.
"""

import os
import pathlib

from pfs.core.errors import FailedPrecondition

TOKEN_FILE = "token"  # in the data dir: the secret every call must carry, readable by the server's owner only
TOKEN_HEADER = "authorization"  # the metadata every call carries it in, as SCHEME + token
TOKEN_SCHEME = "Bearer "


def default_data_dir() -> pathlib.Path:
    """$PFS_DATA_DIR, else ~/.pfs/data; FailedPrecondition where there is no home (a container's uid, say)."""
    if os.environ.get("PFS_DATA_DIR"):
        return pathlib.Path(os.environ["PFS_DATA_DIR"])
    try:
        return pathlib.Path.home() / ".pfs" / "data"
    except RuntimeError:  # HOME unset, and no home in the password database
        raise FailedPrecondition("this user has no home directory for the default data dir ~/.pfs/data: "
                                 "set PFS_DATA_DIR (or give --data-dir)") from None


def token_path(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / TOKEN_FILE

"""Where a server on this machine keeps its data by default, the token file in it, and how calls carry the token.

One definition for the server (which makes them) and its clients (which read the token from there when
nothing else names one), so a local `pfs server` and `pfs` find each other with no settings.
"""

import os
import pathlib

TOKEN_FILE = "token"  # in the data dir: the secret every call must carry, readable by the server's owner only
TOKEN_HEADER = "authorization"  # the metadata every call carries it in, as SCHEME + token
TOKEN_SCHEME = "Bearer "


def default_data_dir() -> pathlib.Path:
    """$PFS_DATA_DIR, else ~/.pfs/data."""
    return pathlib.Path(os.environ.get("PFS_DATA_DIR") or pathlib.Path.home() / ".pfs" / "data")


def token_path(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / TOKEN_FILE

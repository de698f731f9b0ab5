"""Who may use this server: the data dir is its owner's alone, and so is the token file in it.

Every call must carry the token (server/rpc/auth.py checks it), so whoever can read DATA_DIR/token may
call and nobody else may, as only the owner of dockerd's socket may call dockerd. Each server's token is a root
token of its cluster (server/tokens.py), which makes the others. The token is made once
(crash-safe: a temp file, fsync, rename) and kept across restarts, so clients and workers keep working.
"""

import pathlib
import secrets

from pfs.core.private import write_private
from server.tokens import TOKEN_BYTES


def owner_only(data_dir: pathlib.Path) -> None:
    """Makes DATA_DIR mode 0700: what it holds is the owner's alone (with --no-token too)."""
    data_dir.chmod(0o700)


def server_token(path: pathlib.Path) -> str:
    """The token in PATH (made if missing), its file made mode 0600: a root token of the cluster (tokens.py)."""
    if not path.exists():
        write_private(path, secrets.token_hex(TOKEN_BYTES))
    if path.stat().st_mode & 0o077:  # one already the owner's alone may be read-only (a Kubernetes Secret's)
        path.chmod(0o600)
    token = path.read_text().strip()
    if not token:
        raise SystemExit(f"pfs server: the token file {path} is empty: remove it, and the server makes a new one")
    return token

"""Who may use this server: the data dir is its owner's alone, and so is the token file in it.

Every call must carry the token (server/rpc/auth.py checks it), so whoever can read DATA_DIR/token may
call and nobody else may, as only the owner of dockerd's socket may call dockerd. Each server's token is a root
token of its cluster (server/tokens.py), which makes the others. The token is made once
(crash-safe: a temp file, fsync, rename) and kept across restarts, so clients and workers keep working.
"""

import os
import pathlib
import secrets


TOKEN_BYTES = 32


def owner_only(data_dir: pathlib.Path) -> None:
    """Makes DATA_DIR mode 0700: what it holds is the owner's alone (with --no-token too)."""
    data_dir.chmod(0o700)


def server_token(path: pathlib.Path) -> str:
    """The token in PATH (made if missing), its file made mode 0600: a root token of the cluster (tokens.py)."""
    if not path.exists():
        _write_atomically(path, secrets.token_hex(TOKEN_BYTES))
    path.chmod(0o600)
    token = path.read_text().strip()
    if not token:
        raise SystemExit(f"pfs server: the token file {path} is empty: remove it, and the server makes a new one")
    return token


def _write_atomically(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)

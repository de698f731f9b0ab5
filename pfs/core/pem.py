"""PEM files (certificates, keys), read with a one-line error for what cannot be used."""

import os
import pathlib

from pfs.core.errors import InvalidArgument

# the environment variables that name a client's TLS files: the CA it trusts, and its own certificate and key (for
# mutual TLS); a server hands them on to its workers
TLS_ENV = ("PFS_TLS_CA", "PFS_TLS_CERT", "PFS_TLS_KEY")


def read_pem(path: str | os.PathLike, what: str) -> bytes:
    """The PEM file PATH, which WHAT names; one line saying why not when it cannot be read or holds no PEM."""
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as err:
        raise InvalidArgument(f"{what}: cannot read {path}: {err.strerror}") from None
    if b"-----BEGIN " not in data:
        raise InvalidArgument(f"{what}: {path} holds no PEM certificate or key (-----BEGIN ...)")
    return data

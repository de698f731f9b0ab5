"""The token a client shows the server on every call, and the channel that adds it.

Where the token comes from, first found wins: the caller's own (Client(token=...), `pfs --token-file`),
$PFS_TOKEN, the file $PFS_TOKEN_FILE names, the file `pfs auth login` wrote (~/.pfs/token), the default data
dir's token file (so a client of a local server started by the same user needs nothing set). No token at all is
not an error here: a server started with --no-token needs none, and any other says in one line where to find it.
"""

import ipaddress
import os
import pathlib
import socket
from collections.abc import Sequence

import grpc

from pfs.client import tls
from pfs.core.data_dir import TOKEN_HEADER, TOKEN_SCHEME, default_data_dir, token_path
from pfs.core.errors import FailedPrecondition, InvalidArgument, Unauthenticated


def find_token() -> str | None:
    """The token from the environment, `pfs auth login`'s file or the default data dir; None if none is there."""
    if os.environ.get("PFS_TOKEN"):
        return os.environ["PFS_TOKEN"].strip()
    if os.environ.get("PFS_TOKEN_FILE"):
        return read_token(pathlib.Path(os.environ["PFS_TOKEN_FILE"]))
    try:
        files = [login_path(), token_path(default_data_dir())]
    except FailedPrecondition:  # no home, so no default data dir: no token there
        return None
    # os.path.isfile: False too where it may not be seen
    return next((read_token(f) for f in files if os.path.isfile(f)), None)


def login_path() -> pathlib.Path:
    """Where `pfs auth login` keeps the token it was given: ~/.pfs/token."""
    try:
        return pathlib.Path.home() / ".pfs" / "token"
    except RuntimeError:  # HOME unset, and no home in the password database
        raise FailedPrecondition("this user has no home directory for ~/.pfs/token: give the token in PFS_TOKEN "
                                 "or PFS_TOKEN_FILE instead") from None


def read_token(path: pathlib.Path) -> str:
    """The token in the file PATH; one line saying why not when it cannot be read."""
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise Unauthenticated(f"cannot read the token file {path}: {err.strerror} (it is the pfs server's "
                              "DATA_DIR/token; only its owner may read it)") from None
    except UnicodeDecodeError:
        token = ""
    if not token:
        raise Unauthenticated(f"the token file {path} holds no token (give the pfs server's DATA_DIR/token)")
    return token


def channel(address: str, token: str | None, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A channel to ADDRESS (see target(); with TLS as pfs.client.tls says) whose every call carries TOKEN (none
    if None)."""
    secure, bare = tls.split(address)
    if not secure:
        plain = grpc.insecure_channel(target(bare), options=list(options))
    else:
        # the certificate must name the host as given, not the address it resolves to: the first server's
        first = bare.split(",")[0].strip().rpartition(":")[0].removeprefix("[").removesuffix("]")
        plain = grpc.secure_channel(target(bare), tls.credentials(),
                                    options=[*options, ("grpc.default_authority", first)])
    return plain if token is None else grpc.intercept_channel(plain, _Bearer(TOKEN_SCHEME + token))


def target(address: str) -> str:
    """The gRPC target of ADDRESS: HOST:PORT, or several, comma-separated (the servers of one cluster). Of several,
    the channel uses the first it can reach and moves on to the next when that one goes away (gRPC's pick_first
    over a static list: hosts are resolved here, once)."""
    servers = [a.strip() for a in address.split(",") if a.strip()]
    if len(servers) == 1:
        return servers[0]
    if not servers:
        raise InvalidArgument(f"no server in the address {address!r}: give HOST:PORT, or several, comma-separated")
    ips = [_resolved(s) for s in servers]
    if len({ip.version for ip, _ in ips}) > 1:
        raise InvalidArgument(f"the servers of {address!r} are of both IPv4 and IPv6; give them all of one")
    if ips[0][0].version == 4:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in ips)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in ips)


def _resolved(server: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, sep, port = server.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit():
        raise InvalidArgument(f"{server!r} is not HOST:PORT")
    try:
        info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise InvalidArgument(f"cannot resolve the server {server!r}: {err}") from None
    return ipaddress.ip_address(info[0][4][0]), int(port)


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer TOKEN` to the metadata of every kind of call."""

    def __init__(self, value: str) -> None:
        self._header = (TOKEN_HEADER, value)

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(details.method, details.timeout, [*(details.metadata or ()), self._header],
                        details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression

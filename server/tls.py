"""TLS for the server, and the rule that keeps a server open to the network from serving in the clear.

`--tls-cert` and `--tls-key` (PEM) make the server speak TLS; `--tls-client-ca` makes it ask every client for a
certificate that CA signed (mutual TLS). A server listening beyond loopback refuses to start without TLS and its
token unless `--insecure` says to: on loopback only this machine's users can reach it, and the token in an
owner-only file already decides which of them may call.
"""

import ipaddress
import ssl

import grpc

from pfs.core.errors import InvalidArgument
from pfs.core.pem import read_pem


def credentials(cert: str | None, key: str | None, client_ca: str | None) -> grpc.ServerCredentials | None:
    """The server's TLS credentials (None: plain); InvalidArgument, one line, for files that cannot be used."""
    if not cert and not key:
        if client_ca:
            raise InvalidArgument("--tls-client-ca asks clients for certificates over TLS: give --tls-cert and "
                                  "--tls-key too")
        return None
    if not (cert and key):
        raise InvalidArgument("--tls-cert and --tls-key go together: give the server's certificate and its key")
    chain, private = read_pem(cert, "--tls-cert"), read_pem(key, "--tls-key")
    try:  # what gRPC would find only at a client's first handshake
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as err:
        raise InvalidArgument(f"--tls-cert {cert} and --tls-key {key} are not a certificate and its key: "
                              f"{err.reason or err}") from None
    ca = read_pem(client_ca, "--tls-client-ca") if client_ca else None
    return grpc.ssl_server_credentials([(private, chain)], root_certificates=ca, require_client_auth=ca is not None)


def exposed(listen: str, tls: bool, token: bool) -> str:
    """What a server listening on LISTEN lacks to be open to the network (TLS, its token), or '' if nothing:
    on loopback it lacks nothing."""
    if listen == "localhost" or _loopback(listen):
        return ""
    missing = [what for what, has in (("TLS (give --tls-cert and --tls-key)", tls),
                                      ("its token (leave out --no-token)", token)) if not has]
    return " and ".join(missing)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:  # a name: it may be any interface's
        return False

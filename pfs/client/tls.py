"""TLS for clients: whether a channel speaks it, and with which certificates.

A client speaks TLS to an address that says so, `grpcs://HOST:PORT[,HOST:PORT]` (as a Pachyderm address
does), or whenever a CA is given: PFS_TLS_CA, the file of the certificate authority it trusts (`pfs --tls-ca`
sets it); with grpcs:// and no CA it trusts the system's roots. Either way it checks that the server's
certificate names the host it called (an IP address among its names counts). For a server that asks clients
for certificates of their own (mutual TLS), PFS_TLS_CERT and PFS_TLS_KEY name this client's. Settings live in
the environment so that what a client starts (a mount, a worker's mounts) speaks to the server as it does.
"""

import os

import grpc

from pfs.core.errors import InvalidArgument
from pfs.core.pem import TLS_ENV, read_pem

TLS, PLAIN = "grpcs://", "grpc://"


def split(address: str) -> tuple[bool, str]:
    """Whether ADDRESS asks for TLS (its scheme, else whether a CA is given), and the address without scheme."""
    for scheme, tls in ((TLS, True), (PLAIN, False)):
        if address.startswith(scheme):
            return tls, address.removeprefix(scheme)
    return bool(os.environ.get("PFS_TLS_CA")), address


def credentials() -> grpc.ChannelCredentials:
    """The credentials of a TLS channel: the CA of PFS_TLS_CA (else the system's roots), and the client's own
    certificate and key if PFS_TLS_CERT and PFS_TLS_KEY name them."""
    ca, cert, key = (os.environ.get(name) for name in TLS_ENV)
    if bool(cert) != bool(key):
        raise InvalidArgument("PFS_TLS_CERT and PFS_TLS_KEY go together: give both (a client certificate and its "
                              "key), or neither")
    return grpc.ssl_channel_credentials(root_certificates=read_pem(ca, "PFS_TLS_CA") if ca else None,
                                        private_key=read_pem(key, "PFS_TLS_KEY") if key else None,
                                        certificate_chain=read_pem(cert, "PFS_TLS_CERT") if cert else None)

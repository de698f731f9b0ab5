"""The one mapping from gRPC status codes to domain errors, on the client side."""

import grpc

from pfs.core.errors import KINDS, WIRE_KEY, PfsError, ResourceExhausted, Unavailable

KINDS_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.ALREADY_EXISTS: "already_exists",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.ABORTED: "conflict",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "permission_denied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource_exhausted",
    grpc.StatusCode.DATA_LOSS: "data_loss",
    grpc.StatusCode.UNAVAILABLE: "unavailable",  # one the server reported: something behind it (its bucket)
}


CONNECTING = "failed to connect"  # how gRPC's details begin where no connection was made
CUT_OFF = ("Stream removed", "Socket closed", "Connection reset")  # and, else, a call's connection that was lost
# What gRPC says of a TLS connection that failed, and what it means to whoever called
TLS_FAILURES = (
    ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not signed by a CA this client trusts (give the CA's "
                                  "certificate: --tls-ca or PFS_TLS_CA)"),
    ("Hostname Verification", "its TLS certificate does not name the host called (call it by a name or address "
                              "its certificate holds)"),
    ("WRONG_VERSION_NUMBER", "it does not speak TLS (leave out grpcs:// and --tls-ca or PFS_TLS_CA)"),
    ("Socket closed", "something there closed the connection: a server that speaks TLS, to a client that does not "
                      "(call it as grpcs://HOST:PORT, with --tls-ca or PFS_TLS_CA for its CA), or that asks for a "
                      "client's certificate (PFS_TLS_CERT and PFS_TLS_KEY)"),
)


def domain_error(err: grpc.RpcError, address: str) -> PfsError:
    """The domain error a failed call stands for."""
    code = err.code()
    reported = any(key == WIRE_KEY for key, _ in (err.trailing_metadata() or ()))
    if code == grpc.StatusCode.UNAVAILABLE and not reported:  # gRPC's own: no server answered
        details = err.details() or ""
        if not details.startswith(CONNECTING) and any(sign in details for sign in CUT_OFF):
            return Unavailable(f"the connection to the pfs server at {address} was cut off ({details}): the call "
                               "may or may not have been done (is the server still running?); look before trying "
                               "again")
        why = next((why for sign, why in TLS_FAILURES if sign in details), "") if details.startswith(CONNECTING) else ""
        return Unavailable(f"cannot reach the pfs server at {address}: {why}" if why else
                           f"cannot reach the pfs server at {address} (start one with `pfs server`, "
                           "or point PFS_ADDRESS or --address at it)")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (err.details() or ""):  # gRPC's own
        return ResourceExhausted(f"the server at {address} refused a message as too large: {err.details()}")
    return KINDS[KINDS_BY_CODE.get(code, "internal")](err.details() or str(code))

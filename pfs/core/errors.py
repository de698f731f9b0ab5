"""Domain errors: every failure a user can meet, each with a message saying what to do.

Each edge owns one mapping from these kinds: gRPC status (server/rpc and
pfs/client), errno (pfs/fuse), exit code (pfs/cli).
"""


WIRE_KEY = "pfs-error"  # gRPC trailing metadata: the kind of a domain error the server itself reported


class PfsError(Exception):
    """Base of the domain errors; the message is meant for the user."""

    kind = "internal"


class NotFound(PfsError):
    """A repo, commit, branch or file that does not exist."""

    kind = "not_found"


class AlreadyExists(PfsError):
    """Something that must be unique exists already."""

    kind = "already_exists"


class FailedPrecondition(PfsError):
    """The call is valid but not in this state (a finished commit, an open parent)."""

    kind = "failed_precondition"


class Conflict(FailedPrecondition):
    """Another writer holds what the call needs (an open commit on the branch): wait for it and try again."""

    kind = "conflict"


class InvalidArgument(PfsError):
    """A malformed name, path, reference or option."""

    kind = "invalid_argument"


class Unavailable(PfsError):
    """The server (or a URL) cannot be reached."""

    kind = "unavailable"


class Unauthenticated(PfsError):
    """The call carried no token, or not the server's: only whoever can read its token file may call."""

    kind = "unauthenticated"


class PermissionDenied(PfsError):
    """The caller is known, and may not do this."""

    kind = "permission_denied"


class ResourceExhausted(PfsError):
    """The server ran out of something it needs, such as space on its disk; free some and try again."""

    kind = "resource_exhausted"


class DataLoss(PfsError):
    """Stored data is missing or does not match its address."""

    kind = "data_loss"


KINDS: dict[str, type[PfsError]] = {
    cls.kind: cls
    for cls in (PfsError, NotFound, AlreadyExists, FailedPrecondition, Conflict, InvalidArgument, Unavailable,
                Unauthenticated, PermissionDenied, ResourceExhausted, DataLoss)
}

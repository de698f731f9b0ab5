"""The one mapping from domain errors to gRPC status codes, on the server side."""

import functools
import inspect
import logging
from collections.abc import Callable

import grpc

from pfs.core.errors import WIRE_KEY, PfsError

log = logging.getLogger(__name__)

CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "conflict": grpc.StatusCode.ABORTED,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "data_loss": grpc.StatusCode.DATA_LOSS,
    "internal": grpc.StatusCode.INTERNAL,
}


MAX_MESSAGE = 500  # characters of a status message (12 bytes each at most, percent-encoded): a client refuses
# trailing metadata past 8 KiB, and a refusal that quotes a value need not quote all of it


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, PfsError):
        context.set_trailing_metadata(((WIRE_KEY, exc.kind),))
        message = str(exc)
        context.abort(CODES[exc.kind], message if len(message) <= MAX_MESSAGE else f"{message[:MAX_MESSAGE]}...")
    log.exception("internal error")
    context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {exc}")


def translated(method: Callable) -> Callable:
    """Wraps a servicer method so that a domain error becomes its status code."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def streaming(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                _abort(context, exc)

        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)

    return unary

"""The one mapping from domain errors to gRPC status codes, on the server side."""

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from pfs.core.errors import WIRE_KEY, PfsError
from server.rpc import blocking

log = logging.getLogger(__name__)

CODES = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "conflict": grpc.StatusCode.ABORTED,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "data_loss": grpc.StatusCode.DATA_LOSS,
    "internal": grpc.StatusCode.INTERNAL,
}


MAX_MESSAGE = 500  # characters of a status message (12 bytes each at most, percent-encoded): a client refuses
# trailing metadata past 8 KiB, and a refusal that quotes a value need not quote all of it


async def abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, PfsError):
        message = str(exc)
        await context.abort(CODES[exc.kind], message if len(message) <= MAX_MESSAGE else f"{message[:MAX_MESSAGE]}...",
                            ((WIRE_KEY, exc.kind),))
    log.exception("internal error")
    await context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {exc}")


def translated(method: Callable) -> Callable:
    """Wraps a servicer method into what grpc.aio calls (a coroutine, or an async generator for a response
    stream), a domain error becoming its status code.

    A coroutine or an async generator runs on the event loop: a call that waits (for news, for jobs) holds
    no thread. A plain method runs in the loop's pool of threads, and a plain generator is pulled there one
    item at a time (server/rpc/blocking.py): blocking store code never stalls the loop.
    """
    if inspect.isgeneratorfunction(method):
        return _streaming(method, lambda *call: blocking.pulled(method(*call)))
    if inspect.isasyncgenfunction(method):
        return _streaming(method, method)
    if inspect.iscoroutinefunction(method):
        return _unary(method, method)
    return _unary(method, lambda *call: asyncio.to_thread(method, *call))


def _streaming(method: Callable, responses: Callable[..., AsyncIterator]) -> Callable:
    @functools.wraps(method)
    async def streaming(self, request, context):
        try:
            async for response in responses(self, request, context):
                yield response
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            await abort(context, exc)

    return streaming


def _unary(method: Callable, response: Callable[..., Awaitable]) -> Callable:
    @functools.wraps(method)
    async def unary(self, request, context):
        try:
            return await response(self, request, context)
        except Exception as exc:  # noqa: BLE001
            await abort(context, exc)

    return unary

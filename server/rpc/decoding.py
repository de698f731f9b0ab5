"""Requests that do not decode are answered INVALID_ARGUMENT, with one log line, for every RPC.

grpc's own path for a request body its deserializer refuses logs a full traceback and answers INTERNAL,
once per request: garbage from a client would fill the log and read as a server bug. This interceptor
gives each method's deserializer a wrapper that turns a refusal into a marker, and each method's
behaviour one that answers the marker: a unary request before the servicer runs, a message in a
request stream as an InvalidArgument where the servicer reads it (its `translated` wrapper maps it).
"""

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from pfs.core.errors import InvalidArgument
from server.rpc.handlers import around

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Undecodable:
    """What the wrapped deserializer gives for bytes that are not the method's request message."""

    error: str


class RequestDecoding(grpc.aio.ServerInterceptor):
    """Wraps every method's handler (once per method) so an undecodable request is INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method not in self._handlers:
            handler = await continuation(handler_call_details)
            if handler is None or handler.request_deserializer is None:
                return handler  # an unknown method (grpc answers UNIMPLEMENTED), or one taking raw bytes
            self._handlers[method] = _wrapped(method, handler)
        return self._handlers[method]


def _wrapped(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    deserialize = handler.request_deserializer

    def lenient(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the bytes are not a request
            return Undecodable(f"{type(exc).__name__}: {exc}")

    def refuse(context: grpc.aio.ServicerContext, request: Undecodable) -> str:
        message = f"{method}: the request does not decode as its message ({request.error})"
        log.warning("%s, from %s", message, context.peer())
        return message

    @contextlib.asynccontextmanager
    async def unary(request, context: grpc.aio.ServicerContext) -> AsyncIterator:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refuse(context, request))
        yield request

    @contextlib.asynccontextmanager
    async def streaming(requests: AsyncIterator, context: grpc.aio.ServicerContext) -> AsyncIterator:
        async def decoded() -> AsyncIterator:
            async for request in requests:
                if isinstance(request, Undecodable):
                    raise InvalidArgument(refuse(context, request))
                yield request

        yield decoded()

    checked = around(handler, streaming if handler.request_streaming else unary)
    return checked._replace(request_deserializer=lenient)

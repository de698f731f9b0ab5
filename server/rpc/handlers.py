"""What the interceptors share: every behaviour of a method handler run inside one async context.

After `translated` (server/rpc/status.py) every behaviour is a coroutine function, or an async generator
function for a response stream; a wrapper must stay of the same kind, since grpc.aio calls each by its kind.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Around = Callable[[Any, grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]


def around(handler: grpc.RpcMethodHandler, inside: Around) -> grpc.RpcMethodHandler:
    """HANDLER with each behaviour run inside INSIDE(request, context), which gives the request (or request
    stream) the behaviour gets: the same one, or a checked one."""
    def unary(behavior: Callable) -> Callable:
        async def wrapped(request, context):
            async with inside(request, context) as request:
                return await behavior(request, context)

        return wrapped

    def streaming(behavior: Callable) -> Callable:
        async def wrapped(request, context) -> AsyncIterator:
            async with inside(request, context) as request:
                async for response in behavior(request, context):
                    yield response

        return wrapped

    behaviors = {}
    for name, wrap in (("unary_unary", unary), ("stream_unary", unary),
                       ("unary_stream", streaming), ("stream_stream", streaming)):
        if getattr(handler, name):
            behaviors[name] = wrap(getattr(handler, name))
    return handler._replace(**behaviors)


def handler_of_stream(handler: grpc.RpcMethodHandler, behavior: Callable) -> grpc.RpcMethodHandler:
    """HANDLER as one whose request is a stream (of one message, from a client calling the method as unary: the
    wire is the same), with BEHAVIOR, of the stream's kind, in place of its own. grpc reads a unary request whole
    before its behaviour runs; a stream's messages are read as its behaviour asks for them."""
    behaviors = dict.fromkeys(("unary_unary", "unary_stream", "stream_unary", "stream_stream"))
    behaviors["stream_stream" if handler.response_streaming else "stream_unary"] = behavior
    return handler._replace(request_streaming=True, **behaviors)

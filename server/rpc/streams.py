"""A bound on the calls that last as long as a client wants, so they cannot take the threads unary calls need.

The server is grpc's sync server: every call holds a thread of its pool from start to end. A stream lasts
as long as its client keeps it open or feeds it slowly (subscribe-commit waits for news, a put-chunks stream
waits for its client), and flush-commit waits for jobs; a bounded pool filled by such calls answered nothing
else. So the pool is LIMIT threads for these long calls plus threads of their own for unary calls (see
server/main.py), and a long call beyond LIMIT is refused at once with RESOURCE_EXHAUSTED, never queued. That is
the simplest design that holds: handlers stay plain blocking code over the store (grpc's asyncio server would
need every servicer, the store's waits and the request-decoding interceptor rewritten for an event loop), an
idle thread costs little memory, and the total stays bounded.
"""

import threading
from collections.abc import Callable, Iterator

import grpc

WAITING_UNARY = frozenset({"/pps.PPS/FlushCommit"})  # unary calls that wait for news as long as it takes


class StreamLimit(grpc.ServerInterceptor):
    """Lets at most LIMIT streaming (or waiting) calls run at once; one more is RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method not in self._handlers:
            handler = continuation(handler_call_details)
            long = handler is not None and (handler.request_streaming or handler.response_streaming
                                            or method in WAITING_UNARY)
            self._handlers[method] = self._wrapped(handler) if long else handler
        return self._handlers[method]

    def _wrapped(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        def take(context: grpc.ServicerContext) -> None:
            if not self._slots.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"the server already serves {self.limit} streaming calls (subscribe-commit, "
                              "flush-commit, transfers); call again once some have ended")

        def returning(behavior: Callable) -> Callable:
            def held(request, context):
                take(context)
                try:
                    return behavior(request, context)
                finally:
                    self._slots.release()

            return held

        def yielding(behavior: Callable) -> Callable:
            def held(request, context) -> Iterator:
                take(context)
                try:
                    yield from behavior(request, context)
                finally:  # also when the client went away and grpc dropped this generator
                    self._slots.release()

            return held

        behaviors = {}
        for name, wrap in (("unary_unary", returning), ("stream_unary", returning),
                           ("unary_stream", yielding), ("stream_stream", yielding)):
            if getattr(handler, name):
                behaviors[name] = wrap(getattr(handler, name))
        return handler._replace(**behaviors)
